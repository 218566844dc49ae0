"""outbound delivery: outbox claims, the channel a row leaves by, pending email per conversation

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channel_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('attempt_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_outbox_channel_id_channels'), 'channels', ['channel_id'], ['id']
        )
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('email_pending_since', sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column('delivery_warning', sa.Text(), nullable=True))
        batch_op.create_index(
            batch_op.f('ix_conversations_email_pending_since'), ['email_pending_since'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_conversations_email_pending_since'))
        batch_op.drop_column('delivery_warning')
        batch_op.drop_column('email_pending_since')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_outbox_channel_id_channels'), type_='foreignkey')
        batch_op.drop_column('claimed_at')
        batch_op.drop_column('attempt_id')
        batch_op.drop_column('channel_id')
