"""job leases: each running job's owning controller and its lease, a cancel request;
the leader lease row for SQLite

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22 14:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=96), nullable=True))
        batch_op.add_column(sa.Column('lease_expires_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('cancel_requested_at', sa.Float(), nullable=True))
        batch_op.create_index('ix_jobs_state_lease', ['state', 'lease_expires_at'])
    op.create_table('leader_leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('owner', sa.String(length=96), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('leader_leases')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_state_lease')
        batch_op.drop_column('cancel_requested_at')
        batch_op.drop_column('lease_expires_at')
        batch_op.drop_column('owner')
