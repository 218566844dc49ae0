"""imap folder bookmarks: the highest UID handled per account, folder and UIDVALIDITY

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 08:00:00
"""
import re
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# imap:<account>:<folder>:<uidvalidity>:<uid>; a folder name may itself hold colons.
_KEY = re.compile(r"imap:([^:]*):(.*):(\d+):(\d+)")


def upgrade() -> None:
    folders = op.create_table('imap_folders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account', sa.String(length=200), nullable=False),
    sa.Column('folder', sa.String(length=998), nullable=False),
    sa.Column('uidvalidity', sa.BigInteger(), nullable=False),
    sa.Column('last_uid', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_imap_folders')),
    sa.UniqueConstraint('account', 'folder', 'uidvalidity', name='uq_imap_folders_account_folder_uidvalidity')
    )
    # Mail polled before this revision: its bookmarks come from the stored source keys.
    highest: dict[tuple[str, str, int], int] = {}
    keys = op.get_bind().execute(
        sa.text("SELECT source_key FROM inbound_mail WHERE source = 'imap' AND source_key IS NOT NULL")
    )
    for (key,) in keys:
        match = _KEY.fullmatch(key)
        if match:
            where = (match.group(1), match.group(2), int(match.group(3)))
            highest[where] = max(highest.get(where, 0), int(match.group(4)))
    if highest:
        now = datetime.now(timezone.utc)
        op.bulk_insert(folders, [
            {'account': a, 'folder': f, 'uidvalidity': v, 'last_uid': uid, 'updated_at': now}
            for (a, f, v), uid in highest.items()
        ])


def downgrade() -> None:
    op.drop_table('imap_folders')
