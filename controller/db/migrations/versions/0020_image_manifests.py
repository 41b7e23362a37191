"""images: the chunk manifest made at registration, which cache fills check copies against

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-22 21:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('chunk_size', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('chunk_sha256s', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_column('chunk_sha256s')
        batch_op.drop_column('chunk_size')
