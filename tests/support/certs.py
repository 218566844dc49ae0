"""Self-signed TLS certificates generated at test time.

Used by the throwaway Dovecot server (IMAPS/STARTTLS) and meant to be reused for
SMTP STARTTLS tests. The certificate is its own trust anchor: a client trusts it
by loading ``cert_path`` as its CA file, so hostname checking can stay on.

Generated with the ``openssl`` CLI rather than the ``cryptography`` package so
the test suite needs no extra Python dependency; ``openssl`` is pulled in by
Dovecot anyway and is installed by ``.ci/install-system-packages``.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class SelfSignedCert:
    """Paths of a generated certificate and its private key (both PEM)."""

    cert_path: Path
    key_path: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly this certificate, hostname checks on."""
        return ssl.create_default_context(cafile=str(self.cert_path))

    def server_context(self) -> ssl.SSLContext:
        """A server context presenting this certificate (e.g. for an SMTP STARTTLS test)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert_path), str(self.key_path))
        return ctx


def _san_entry(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"


def make_self_signed_cert(
    directory: Path,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    name: str = "server",
    days: int = 2,
) -> SelfSignedCert:
    """Write ``<name>.crt``/``<name>.key`` into ``directory`` and return their paths.

    ``hosts`` become subjectAltNames (IP or DNS as appropriate); the first one is
    also the CN. A P-256 key keeps generation fast (a few ms against ~100 ms for
    RSA-2048), which matters for function-scoped fixtures.
    """
    if not hosts:
        raise ValueError("at least one host name or address is required")
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl CLI is required to generate test certificates")

    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    san = ",".join(_san_entry(h) for h in hosts)
    # CA:TRUE plus keyCertSign lets the leaf act as its own trust anchor, including
    # under the stricter X.509 checks newer Python/OpenSSL versions enable by default.
    cmd = [
        openssl, "req", "-x509", "-nodes",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", str(key_path), "-out", str(cert_path),
        "-days", str(days),
        "-subj", f"/CN={hosts[0]}/O=support-email-gateway tests",
        "-addext", f"subjectAltName={san}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
        "-addext", "extendedKeyUsage=serverAuth",
    ]  # fmt: skip
    # Keep the key unreadable to other users from the moment it is created.
    old_umask = os.umask(0o077)
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    finally:
        os.umask(old_umask)
    if result.returncode != 0:
        raise RuntimeError(f"openssl failed ({result.returncode}): {result.stderr.strip()}")
    cert_path.chmod(0o644)
    return SelfSignedCert(cert_path=cert_path, key_path=key_path)


def make_rsa_key(path: Path, bits: int = 2048) -> Path:
    """A PEM RSA private key (for DKIM signing tests), written by the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl CLI is required to generate test keys")
    command = [openssl, "genrsa", "-out", str(path), str(bits)]
    subprocess.run(command, check=True, capture_output=True)
    return path
