"""background work: SLA policies on apps, due times of the email check and the summary

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('apps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sla_policies', sa.JSON(), nullable=False, server_default='[]'))
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_check_due_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('summary_due_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_tickets_email_check_due_at'), ['email_check_due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_tickets_summary_due_at'), ['summary_due_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tickets_summary_due_at'))
        batch_op.drop_index(batch_op.f('ix_tickets_email_check_due_at'))
        batch_op.drop_column('summary_due_at')
        batch_op.drop_column('email_check_due_at')
    with op.batch_alter_table('apps', schema=None) as batch_op:
        batch_op.drop_column('sla_policies')
