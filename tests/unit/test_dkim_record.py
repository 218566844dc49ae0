"""The DKIM TXT record shown on the setup page carries exactly the key's public half."""

from __future__ import annotations

import base64
import shutil
import subprocess

import dkim
import pytest

from channels.email.dkim_record import DkimKeyError, dkim_record
from tests.support.certs import make_rsa_key


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    return make_rsa_key(tmp_path_factory.mktemp("dkim") / "key.pem")


def test_record_matches_openssl_public_key(key_file):
    record = dkim_record("mail", "example.com", str(key_file))
    assert record.name == "mail._domainkey.example.com."
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(key_file), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    assert record.value == f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def test_a_mail_signed_with_the_key_verifies_against_the_record(key_file):
    record = dkim_record("mail", "example.com", str(key_file))
    message = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
    signed = dkim.sign(message, b"mail", b"example.com", key_file.read_bytes()) + message

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name.decode() == record.name
        return record.value.encode()

    assert dkim.verify(signed, dnsfunc=dns)


def test_a_file_that_is_not_a_key_is_a_clear_error(tmp_path):
    bad = tmp_path / "key.pem"
    bad.write_text("not a key")
    with pytest.raises(DkimKeyError, match="not a PEM RSA private key"):
        dkim_record("mail", "example.com", str(bad))
    with pytest.raises(DkimKeyError, match="cannot read"):
        dkim_record("mail", "example.com", str(tmp_path / "missing.pem"))
