"""agent identity

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 06:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('agent_id', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint('uq_hosts_agent_id', ['agent_id'])


def downgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_constraint('uq_hosts_agent_id', type_='unique')
        batch_op.drop_column('agent_id')
