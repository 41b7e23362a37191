"""volumes: an index per primary storage and state, for filtered pages and their count

Revision ID: 0018
Revises: 0014
Create Date: 2026-11-22 19:40:00
"""
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_volumes_storage_state_created', 'volumes',
                    ['primary_storage_id', 'state', 'created_at', 'id'])


def downgrade() -> None:
    op.drop_index('ix_volumes_storage_state_created', table_name='volumes')
