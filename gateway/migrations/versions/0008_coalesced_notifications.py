"""coalesced notifications: one pending row per agent, conversation and stream collects events

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:40:00
"""
import json

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('agent_notifications', schema=None) as batch_op:
        batch_op.drop_constraint('uq_agent_notifications_event_agent', type_='unique')
        batch_op.drop_index('ix_agent_notifications_agent_id')
        batch_op.add_column(sa.Column('stream', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('events', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('event_count', sa.Integer(), nullable=True))
    bind = op.get_bind()
    # Rows from before: one event each. Pending ones of the same agent, conversation and stream
    # are merged into the oldest, which the new unique index requires.
    rows = bind.execute(sa.text(
        "SELECT id, agent_id, conversation_id, kind, digest, event_id, sent_at"
        " FROM agent_notifications ORDER BY id"
    )).all()
    keep: dict[tuple[object, ...], tuple[int, list[int]]] = {}
    gone: list[int] = []
    for id_, agent_id, conversation_id, kind, digest, event_id, sent_at in rows:
        stream = 'rejected' if kind == 'reply_rejected' else 'conversation'
        key = (agent_id, conversation_id, stream, bool(digest))
        if sent_at is None and key in keep:
            keep[key][1].append(event_id)
            gone.append(id_)
            continue
        if sent_at is None:
            keep[key] = (id_, [event_id])
        bind.execute(
            sa.text("UPDATE agent_notifications SET stream = :s, events = :e, event_count = 1"
                    " WHERE id = :id"),
            {"s": stream, "e": json.dumps([event_id]), "id": id_},
        )
    for id_, events in keep.values():
        bind.execute(
            sa.text("UPDATE agent_notifications SET events = :e, event_count = :n WHERE id = :id"),
            {"e": json.dumps(events), "n": len(events), "id": id_},
        )
    for id_ in gone:
        bind.execute(sa.text("DELETE FROM agent_notifications WHERE id = :id"), {"id": id_})
    with op.batch_alter_table('agent_notifications', schema=None) as batch_op:
        batch_op.alter_column('stream', existing_type=sa.String(length=16), nullable=False)
        batch_op.alter_column('events', existing_type=sa.JSON(), nullable=False)
        batch_op.alter_column('event_count', existing_type=sa.Integer(), nullable=False)
        batch_op.create_index('ix_agent_notifications_agent_sent', ['agent_id', 'sent_at'], unique=False)
        batch_op.create_index(
            'ix_agent_notifications_conversation', ['conversation_id', 'agent_id'], unique=False
        )
        batch_op.create_index(
            'uq_agent_notifications_pending',
            ['agent_id', 'conversation_id', 'stream', 'digest'],
            unique=True,
            sqlite_where=sa.text('sent_at IS NULL'),
            postgresql_where=sa.text('sent_at IS NULL'),
        )


def downgrade() -> None:
    with op.batch_alter_table('agent_notifications', schema=None) as batch_op:
        batch_op.drop_index('uq_agent_notifications_pending')
        batch_op.drop_index('ix_agent_notifications_conversation')
        batch_op.drop_index('ix_agent_notifications_agent_sent')
        batch_op.drop_column('event_count')
        batch_op.drop_column('events')
        batch_op.drop_column('stream')
        batch_op.create_index('ix_agent_notifications_agent_id', ['agent_id'], unique=False)
        batch_op.create_unique_constraint(
            'uq_agent_notifications_event_agent', ['event_id', 'agent_id']
        )
