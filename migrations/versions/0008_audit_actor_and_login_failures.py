"""The audit log names who acted in which role (staff, a member, a register, the system); failed sign-ins are
counted in the database so that every app server sees the same count.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 03:50:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('member_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('role', sa.String(length=16), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_audit_log_member_id_members'), 'members', ['member_id'], ['id'])
    op.execute("UPDATE audit_log SET role = (SELECT staff.role FROM staff WHERE staff.id = audit_log.staff_id) "
               "WHERE staff_id IS NOT NULL")

    op.create_table(
        'login_failures',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('account', sa.String(length=64), nullable=False),
        sa.Column('ip', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_login_failures')),
    )
    op.create_index('ix_login_failures_account', 'login_failures', ['account', 'created_at'], unique=False)
    op.create_index('ix_login_failures_ip', 'login_failures', ['ip', 'created_at'], unique=False)


def downgrade():
    op.drop_index('ix_login_failures_ip', table_name='login_failures')
    op.drop_index('ix_login_failures_account', table_name='login_failures')
    op.drop_table('login_failures')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_audit_log_member_id_members'), type_='foreignkey')
        batch_op.drop_column('role')
        batch_op.drop_column('member_id')
