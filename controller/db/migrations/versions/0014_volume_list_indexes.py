"""indexes for keyset pages of volumes, all and per primary storage

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-22 14:00:00
"""
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_volumes_created', 'volumes', ['created_at', 'id'])
    op.create_index('ix_volumes_storage_created', 'volumes',
                    ['primary_storage_id', 'created_at', 'id'])


def downgrade() -> None:
    op.drop_index('ix_volumes_storage_created', table_name='volumes')
    op.drop_index('ix_volumes_created', table_name='volumes')
