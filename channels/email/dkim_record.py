"""The DNS TXT record that publishes a channel's DKIM public key, from its private key file.

dkimpy (already used to sign) parses the PEM key; the public half is then DER-encoded here as a
SubjectPublicKeyInfo, which needs a dozen lines of DER rather than a new cryptography
dependency (dkimpy's own DER builder cannot encode lengths above 127 bytes).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from dkim.crypto import UnparsableKeyError, parse_pem_private_key

_RSA_ENCRYPTION = bytes.fromhex("2a864886f70d010101")  # OID 1.2.840.113549.1.1.1


class DkimKeyError(Exception):
    """The key file is missing or not a PEM RSA private key."""


@dataclass(frozen=True)
class DkimRecord:
    name: str  # selector._domainkey.domain.
    value: str  # v=DKIM1; k=rsa; p=...


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _integer(value: int) -> bytes:
    # Two's complement: a leading 0x00 keeps a high first bit from meaning "negative".
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def public_key_der(pem: bytes) -> bytes:
    try:
        key = parse_pem_private_key(pem)
    except (UnparsableKeyError, ValueError, IndexError) as exc:
        raise DkimKeyError(f"not a PEM RSA private key ({exc})") from None
    rsa_public = _der(0x30, _integer(key["modulus"]) + _integer(key["publicExponent"]))
    algorithm = _der(0x30, _der(0x06, _RSA_ENCRYPTION) + _der(0x05, b""))
    return _der(0x30, algorithm + _der(0x03, b"\x00" + rsa_public))


def dkim_record(selector: str, domain: str, private_key_file: str) -> DkimRecord:
    try:
        pem = Path(private_key_file).read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"cannot read {private_key_file}: {exc.strerror}") from None
    p = base64.b64encode(public_key_der(pem)).decode()
    return DkimRecord(f"{selector}._domainkey.{domain}.", f"v=DKIM1; k=rsa; p={p}")
