"""agent notifications: the per-agent notification rows and the events' fan-out mark

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 04:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notified_at', sa.DateTime(timezone=True), nullable=True))
    # Events from before this revision are history: nobody is to be notified of them now.
    op.execute("UPDATE events SET notified_at = created_at")
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(
            'ix_events_unnotified', ['id'], unique=False,
            sqlite_where=sa.text('notified_at IS NULL'),
            postgresql_where=sa.text('notified_at IS NULL'),
        )
    op.create_table('agent_notifications',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('app_id', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('conversation_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('digest', sa.Boolean(), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_agent_notifications_agent_id_agents')),
    sa.ForeignKeyConstraint(['app_id'], ['apps.id'], name=op.f('fk_agent_notifications_app_id_apps')),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_agent_notifications_conversation_id_conversations')),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_agent_notifications_event_id_events')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_notifications')),
    sa.UniqueConstraint('event_id', 'agent_id', name='uq_agent_notifications_event_agent')
    )
    with op.batch_alter_table('agent_notifications', schema=None) as batch_op:
        batch_op.create_index('ix_agent_notifications_due', ['sent_at', 'due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_agent_notifications_agent_id'), ['agent_id'], unique=False)


def downgrade() -> None:
    op.drop_table('agent_notifications')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_unnotified')
        batch_op.drop_column('notified_at')
