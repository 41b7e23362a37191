"""agent enrolment: the controller's CA, each host's join token and enrolment

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 07:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('certificate_authorities',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('cert_pem', sa.Text(), nullable=False),
    sa.Column('key_sealed', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('enrolment_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('cert_fingerprint', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('cert_serial', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('cert_expires_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('join_token_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('join_secret_sealed', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('join_token_expires_at', sa.Float(), nullable=True))
    # Agents now serve HTTPS only, on the same port; each host is enrolled again.
    op.execute("UPDATE hosts SET address = 'https://' || substr(address, 8) "
               "WHERE address LIKE 'http://%'")


def downgrade() -> None:
    op.execute("UPDATE hosts SET address = 'http://' || substr(address, 9) "
               "WHERE address LIKE 'https://%'")
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        for column in ('join_token_expires_at', 'join_secret_sealed', 'join_token_id',
                       'cert_expires_at', 'cert_serial', 'cert_fingerprint', 'enrolment_id'):
            batch_op.drop_column(column)
    op.drop_table('certificate_authorities')
