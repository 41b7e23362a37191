"""volume attachments record whether their attach job made the host's iSCSI grant, so
that only such a grant goes with the detach (or with a failed attach)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-22 14:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('volume_attachments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owns_grant', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('volume_attachments', schema=None) as batch_op:
        batch_op.drop_column('owns_grant')
