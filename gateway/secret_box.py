"""Secrets the gateway stores (channel passwords given through the API), encrypted at rest.

Fernet (AES-128-CBC with HMAC-SHA256, from the `cryptography` package) under a key derived
from the server's secret key by HKDF with a purpose label of its own, so the same configured
secret never serves two protocols. The keys of `previous_secret_key_envs` still open what they
sealed (MultiFernet), and `reseal` moves a value under the current key: after a rotation the
stored passwords keep working, and once resealed the old key can be dropped.

A stored secret is `{"sealed": "<fernet token>"}`. A plain string is the cleartext form of
older versions; it is still read, and `reseal` encrypts it (done for every channel at start).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_PURPOSE = b"gateway stored secrets v1"

SECRETS = "secrets"  # the key of a channel's settings that holds its sealed passwords


class SecretUnreadable(Exception):
    """A stored secret that none of the configured keys opens (its key was retired)."""


def _fernet(key: bytes) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(key)
    return Fernet(base64.urlsafe_b64encode(derived))


class SecretBox:
    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        self._current = _fernet(current)
        self._all = MultiFernet([self._current, *(_fernet(k) for k in previous)])

    def __repr__(self) -> str:  # never show key material, not even in a traceback
        return "SecretBox(...)"

    def seal(self, secret: str) -> dict[str, str]:
        return {"sealed": self._current.encrypt(secret.encode()).decode()}

    def open(self, stored: Any) -> str:
        if isinstance(stored, str):
            return stored  # the cleartext of older versions, until it is resealed
        try:
            return self._all.decrypt(str(stored["sealed"]).encode()).decode()
        except (InvalidToken, KeyError, TypeError):
            raise SecretUnreadable(
                "the stored password cannot be decrypted with the configured secret keys "
                "(was the key it was stored under dropped from previous_secret_key_envs?)"
            ) from None

    def is_current(self, stored: Any) -> bool:
        if not isinstance(stored, dict):
            return False
        try:
            self._current.decrypt(str(stored.get("sealed", "")).encode())
        except InvalidToken:
            return False
        return True

    def reseal(self, stored: Any) -> dict[str, str]:
        """The secret sealed under the current key (from cleartext or an older key)."""
        return self.seal(self.open(stored))
