"""agent instance: which start of a host's agent its last connect found

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-22 21:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('agent_instance', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_column('agent_instance')
