"""allocation: each primary storage's allocation threshold and tags

Revision ID: 0016
Revises: 0014
Create Date: 2026-11-22 19:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('primary_storages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('allocation_threshold', sa.Float(),
                                      server_default='90', nullable=False))
        batch_op.add_column(sa.Column('tags', sa.JSON(), server_default='[]',
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('primary_storages', schema=None) as batch_op:
        batch_op.drop_column('tags')
        batch_op.drop_column('allocation_threshold')
