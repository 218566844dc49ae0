"""conversation reads: when each agent last opened each conversation (unread counts)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 17:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'conversation_reads',
        sa.Column('agent_id', sa.Integer(), nullable=False),
        sa.Column('conversation_id', sa.Integer(), nullable=False),
        sa.Column('read_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_conversation_reads_agent_id_agents')),
        sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_conversation_reads_conversation_id_conversations')),
        sa.PrimaryKeyConstraint('agent_id', 'conversation_id', name=op.f('pk_conversation_reads')),
    )
    with op.batch_alter_table('conversation_reads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_conversation_reads_conversation_id'), ['conversation_id'], unique=False)


def downgrade() -> None:
    op.drop_table('conversation_reads')
