"""address claims: an address a widget visitor gave, unverified until its mailed link is followed

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('address_claims',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('app_id', sa.Integer(), nullable=False),
    sa.Column('conversation_id', sa.Integer(), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('link_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['app_id'], ['apps.id'], name=op.f('fk_address_claims_app_id_apps')),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_address_claims_conversation_id_conversations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_address_claims')),
    sa.UniqueConstraint('link_hash', name=op.f('uq_address_claims_link_hash'))
    )
    op.create_index(op.f('ix_address_claims_conversation_id'), 'address_claims', ['conversation_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_address_claims_conversation_id'), table_name='address_claims')
    op.drop_table('address_claims')
