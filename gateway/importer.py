"""Read messages for `gateway import`: an mbox file, a maildir, or a folder of .eml files.

Each message gets a source key from its bytes' digest, so a re-run stores nothing twice.
"""

from __future__ import annotations

import hashlib
import mailbox
from collections.abc import Iterator
from pathlib import Path

from tickets.errors import InvalidValue


def _key(raw: bytes) -> str:
    return "import:" + hashlib.sha256(raw).hexdigest()


def iter_messages(path: str) -> Iterator[tuple[str, bytes]]:
    """(source key, raw bytes) of every message under `path`."""
    p = Path(path)
    if not p.exists():
        raise InvalidValue(f"{path}: no such file or folder")
    if p.is_dir() and (p / "cur").is_dir() and (p / "new").is_dir():
        box = mailbox.Maildir(p, factory=None, create=False)
        for key in box.iterkeys():
            raw = box.get_bytes(key)
            yield _key(raw), raw
    elif p.is_dir():
        for file in sorted(p.rglob("*.eml")):
            raw = file.read_bytes()
            yield _key(raw), raw
    else:
        with p.open("rb") as fh:
            head = fh.read(5)
        if head != b"From ":
            raw = p.read_bytes()
            yield _key(raw), raw
            return
        mbox = mailbox.mbox(p, create=False)
        for key in mbox.iterkeys():
            raw = mbox.get_bytes(key)
            yield _key(raw), raw
