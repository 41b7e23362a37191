"""primary storages' states take the longer maintenance states (entering_maintenance,
leaving_maintenance)

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-22 19:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('primary_storages', schema=None) as batch_op:
        batch_op.alter_column('state', existing_type=sa.String(length=16),
                              type_=sa.String(length=32), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('primary_storages', schema=None) as batch_op:
        batch_op.alter_column('state', existing_type=sa.String(length=32),
                              type_=sa.String(length=16), existing_nullable=False)
