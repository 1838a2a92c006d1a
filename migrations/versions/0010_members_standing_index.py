"""Indexes for the dashboard at a chain's size (a million members): one that the tier counts and the points
liability read instead of the wide member rows, and the purchases' (store, time) index with the member in it, so
that active and repeat members are counted from the index alone.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24 07:40:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_members_standing', 'members', ['deleted_at', 'tier_id', 'store_id', 'points_balance'],
                    unique=False)
    op.drop_index('ix_purchases_store_created', table_name='purchases')
    op.create_index('ix_purchases_store_created', 'purchases', ['store_id', 'created_at', 'member_id'], unique=False)


def downgrade():
    op.drop_index('ix_purchases_store_created', table_name='purchases')
    op.create_index('ix_purchases_store_created', 'purchases', ['store_id', 'created_at'], unique=False)
    op.drop_index('ix_members_standing', table_name='members')
