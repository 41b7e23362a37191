"""storage reports: the last reconcile of each storage (what it holds against the rows);
each attachment's last health probe; image cache collection watermarks

Revision ID: 0013
Revises: 0011
Create Date: 2026-11-22 14:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('storage_reports',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('storage_kind', sa.String(length=16), nullable=False),
    sa.Column('storage_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('report', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('storage_kind', 'storage_id', 'kind')
    )
    with op.batch_alter_table('primary_storages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cache_gc_high_watermark', sa.Float(),
                                      server_default='85', nullable=False))
        batch_op.add_column(sa.Column('cache_gc_low_watermark', sa.Float(),
                                      server_default='70', nullable=False))
    with op.batch_alter_table('primary_storage_host_refs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('health', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('health_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('health_checked_at', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('primary_storage_host_refs', schema=None) as batch_op:
        batch_op.drop_column('health_checked_at')
        batch_op.drop_column('health_reason')
        batch_op.drop_column('health')
    with op.batch_alter_table('primary_storages', schema=None) as batch_op:
        batch_op.drop_column('cache_gc_low_watermark')
        batch_op.drop_column('cache_gc_high_watermark')
    op.drop_table('storage_reports')
