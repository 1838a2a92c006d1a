"""Running totals for the dashboard: a store's and a staff member's figures per 15 minutes, filled from the rows
already there and kept up to date by each transaction from now on.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 05:00:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.orm import Session


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

COUNTS = ('purchases', 'paid_fen', 'refunded_fen', 'new_members', 'points_earned', 'points_bonus',
          'points_redeemed', 'points_expired', 'points_restored', 'points_reversed', 'points_adjusted_in',
          'points_adjusted_out')


def upgrade():
    op.create_table(
        'activity_buckets',
        sa.Column('store_id', sa.Integer(), nullable=False),
        sa.Column('bucket_start', sa.DateTime(timezone=True), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in COUNTS),
        sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_activity_buckets_store_id_stores')),
        sa.PrimaryKeyConstraint('store_id', 'bucket_start', name=op.f('pk_activity_buckets')),
    )
    op.create_index('ix_activity_buckets_bucket_start', 'activity_buckets', ['bucket_start'], unique=False)
    op.create_table(
        'staff_buckets',
        sa.Column('staff_id', sa.Integer(), nullable=False),
        sa.Column('store_id', sa.Integer(), nullable=False),
        sa.Column('bucket_start', sa.DateTime(timezone=True), nullable=False),
        sa.Column('registered', sa.BigInteger(), nullable=False),
        sa.Column('purchases', sa.BigInteger(), nullable=False),
        sa.Column('paid_fen', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['staff_id'], ['staff.id'], name=op.f('fk_staff_buckets_staff_id_staff')),
        sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_staff_buckets_store_id_stores')),
        sa.PrimaryKeyConstraint('staff_id', 'store_id', 'bucket_start', name=op.f('pk_staff_buckets')),
    )
    op.create_index('ix_staff_buckets_bucket_start', 'staff_buckets', ['bucket_start'], unique=False)

    # Count what is already there (the same code the `flask rebuild-rollups` command runs).
    from portal import rollups

    session = Session(bind=op.get_bind())
    rollups.rebuild(session)
    session.flush()


def downgrade():
    op.drop_index('ix_staff_buckets_bucket_start', table_name='staff_buckets')
    op.drop_table('staff_buckets')
    op.drop_index('ix_activity_buckets_bucket_start', table_name='activity_buckets')
    op.drop_table('activity_buckets')
