"""rate windows: the widget's rate limits, counted in the database for every gateway process

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 11:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rate_windows',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_rate_windows'))
    )
    op.create_index(op.f('ix_rate_windows_window_start'), 'rate_windows', ['window_start'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_rate_windows_window_start'), table_name='rate_windows')
    op.drop_table('rate_windows')
