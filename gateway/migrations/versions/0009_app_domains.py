"""app domains: the mail domains each app may use (operator grant or DNS proof)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 11:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('app_domains',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('app_id', sa.Integer(), nullable=False),
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('token', sa.String(length=64), nullable=False),
    sa.Column('proof', sa.String(length=16), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('proven_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_check', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['app_id'], ['apps.id'], name=op.f('fk_app_domains_app_id_apps')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_app_domains')),
    sa.UniqueConstraint('app_id', 'domain', name='uq_app_domains_app_domain')
    )
    with op.batch_alter_table('app_domains', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_app_domains_app_id'), ['app_id'], unique=False)
        # One app per proven domain; pending proofs of several apps may coexist.
        batch_op.create_index(
            'uq_app_domains_proven_domain', ['domain'], unique=True,
            sqlite_where=sa.text('proven_at IS NOT NULL'),
            postgresql_where=sa.text('proven_at IS NOT NULL'),
        )


def downgrade() -> None:
    with op.batch_alter_table('app_domains', schema=None) as batch_op:
        batch_op.drop_index('uq_app_domains_proven_domain')
        batch_op.drop_index(batch_op.f('ix_app_domains_app_id'))
    op.drop_table('app_domains')
