"""snapshot backups: a snapshot's copies on backup storages, and their capacity ledger

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 10:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('snapshot_backups',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('snapshot_id', sa.String(length=36), nullable=False),
    sa.Column('volume_id', sa.String(length=36), nullable=False),
    sa.Column('image_id', sa.String(length=36), nullable=True),
    sa.Column('backup_storage_id', sa.String(length=36), nullable=False),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('virtual_size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['backup_storage_id'], ['backup_storages.id'], ),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], ),
    sa.ForeignKeyConstraint(['snapshot_id'], ['snapshots.id'], ),
    sa.ForeignKeyConstraint(['volume_id'], ['volumes.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_snapshot_backups_snapshot_id', 'snapshot_backups', ['snapshot_id'])
    with op.batch_alter_table('backup_storages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('capacity_allocated', sa.BigInteger(),
                                      server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('backup_storages', schema=None) as batch_op:
        batch_op.drop_column('capacity_allocated')
    op.drop_index('ix_snapshot_backups_snapshot_id', table_name='snapshot_backups')
    op.drop_table('snapshot_backups')
