"""iscsi access

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 23:16:27.418401
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('volume_accesses',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('volume_id', sa.String(length=36), nullable=False),
    sa.Column('host_id', sa.String(length=36), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('uri', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], ),
    sa.ForeignKeyConstraint(['volume_id'], ['volumes.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('volume_id', 'host_id')
    )
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('initiator_iqn', sa.String(length=223), nullable=True))
        batch_op.add_column(sa.Column('initiator_iqn_pinned', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))

    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('export', sa.JSON(), nullable=True))

def downgrade() -> None:
    with op.batch_alter_table('volumes', schema=None) as batch_op:
        batch_op.drop_column('export')

    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_column('initiator_iqn_pinned')
        batch_op.drop_column('initiator_iqn')

    op.drop_table('volume_accesses')
