"""Reply tokens: round trips, forgeries, kinds, expiry, rotation, and finding them in addresses."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.email.tokens import (
    MAC_BYTES,
    AgentToken,
    BounceToken,
    CustomerToken,
    Keyring,
    TokenError,
    TokenExpired,
    agent_token,
    bounce_address,
    bounce_token_in,
    find_token,
    loop_token,
    reply_address,
    token_in_address,
)

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
RING = Keyring(b"current key of the gateway under test")
ids = st.integers(min_value=0, max_value=2**63 - 1)
small_ids = st.integers(min_value=1, max_value=10**7)
purposes = st.sampled_from(["reply", "note"])
customer_tokens = st.builds(CustomerToken, ids, ids, ids)
agent_tokens = st.builds(
    AgentToken,
    ids,
    ids,
    ids,
    purposes,
    st.datetimes(
        min_value=dt.datetime(1971, 1, 1),
        max_value=dt.datetime(2100, 1, 1),
        timezones=st.just(dt.UTC),
    ),
)
tokens = st.one_of(customer_tokens, agent_tokens)


def signed(token, ring=RING):
    return dataclasses.replace(token, key_id=ring.current_id)


@given(tokens)
def test_a_signed_token_verifies_to_what_was_signed(token):
    text = RING.sign(token)
    assert RING.verify(text) == signed(token)
    assert text == text.lower() and "=" not in text
    assert set(text) <= set("abcdefghijklmnopqrstuvwxyz234567")


@given(small_ids, small_ids, small_ids, purposes)
def test_a_realistic_reply_address_stays_within_the_64_octet_local_part(app, conv, agent, purpose):
    text = RING.sign(agent_token(app, conv, agent, purpose, NOW))
    address = reply_address("helpdesk@example.com", text)
    assert len(address.partition("@")[0]) <= 64


@settings(max_examples=300)
@given(tokens, st.data())
def test_any_flipped_bit_is_rejected(token, data):
    raw = RING.sign(token)
    # Flip one bit of the decoded bytes, re-encode: the only change is that bit.
    decoded = bytearray(base64.b32decode(raw.upper() + "=" * (-len(raw) % 8)))
    bit = data.draw(st.integers(min_value=0, max_value=len(decoded) * 8 - 1))
    decoded[bit // 8] ^= 1 << (bit % 8)
    forged = base64.b32encode(bytes(decoded)).decode().rstrip("=").lower()
    with pytest.raises(TokenError) as err:
        RING.verify(forged)
    assert err.value.reason in {"bad-signature", "unknown-key", "malformed"}


@settings(max_examples=300)
@given(tokens, st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567", min_size=1, max_size=80))
def test_random_text_or_another_token_with_a_changed_character_is_rejected(token, junk):
    text = RING.sign(token)
    for candidate in (junk, text[:-1] + ("a" if text[-1] != "a" else "b"), text[:-2], text + "a"):
        if candidate == text:
            continue
        with pytest.raises(TokenError):
            RING.verify(candidate)


@given(tokens)
def test_a_token_of_another_keyring_is_rejected(token):
    other = Keyring(b"somebody else's key")
    with pytest.raises(TokenError) as err:
        RING.verify(other.sign(token))
    assert err.value.reason in {"unknown-key", "bad-signature"}


@given(customer_tokens)
def test_a_customer_token_is_never_an_agent_token(token):
    text = RING.sign(token)
    with pytest.raises(TokenError) as err:
        RING.verify_agent(text, NOW)
    assert err.value.reason == "wrong-kind"
    assert RING.verify_customer(text) == signed(token)


@given(agent_tokens)
def test_an_agent_token_is_never_a_customer_token(token):
    text = RING.sign(token)
    with pytest.raises(TokenError) as err:
        RING.verify_customer(text)
    assert err.value.reason == "wrong-kind"


@given(small_ids, small_ids, small_ids, purposes, st.integers(min_value=0, max_value=60 * 86400))
def test_agent_tokens_expire_after_thirty_days(app, conv, agent, purpose, age_seconds):
    text = RING.sign(agent_token(app, conv, agent, purpose, NOW))
    later = NOW + dt.timedelta(seconds=age_seconds)
    if age_seconds < 30 * 86400:
        token = RING.verify_agent(text, later)
        assert (token.app_id, token.conversation_id, token.agent_id, token.purpose) == (
            app,
            conv,
            agent,
            purpose,
        )
    else:
        with pytest.raises(TokenExpired) as err:
            RING.verify_agent(text, later)
        assert err.value.reason == "expired"
        assert err.value.token.agent_id == agent


def test_the_purpose_is_signed_so_a_note_token_cannot_become_a_reply_token():
    note = RING.sign(agent_token(1, 2, 3, "note", NOW))
    reply = RING.sign(agent_token(1, 2, 3, "reply", NOW))
    assert note != reply
    assert RING.verify_agent(note, NOW).purpose == "note"
    assert RING.verify_agent(reply, NOW).purpose == "reply"


def test_rotation_previous_keys_verify_the_current_key_signs_retired_keys_fail():
    old, new = b"the key of last year", b"the key of this year"
    before = Keyring(old)
    text = before.sign(CustomerToken(1, 2, 3))
    rotated = Keyring(new, [old])
    assert rotated.verify(text) == CustomerToken(1, 2, 3, key_id=before.current_id)
    assert rotated.verify(rotated.sign(CustomerToken(1, 2, 3))).key_id == Keyring(new).current_id
    retired = Keyring(new)
    with pytest.raises(TokenError) as err:
        retired.verify(text)
    assert err.value.reason == "unknown-key"


def test_the_keyring_never_shows_its_keys():
    assert "current key" not in repr(RING)


def test_bad_claims_are_refused_before_signing():
    with pytest.raises(ValueError):
        CustomerToken(-1, 2, 3)
    with pytest.raises(ValueError):
        AgentToken(1, 2, 3, "delete", NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AgentToken(1, 2, 3, "reply", NOW.replace(tzinfo=None))
    with pytest.raises(ValueError):
        Keyring(b"")


def test_the_mac_is_truncated_to_96_bits():
    assert MAC_BYTES * 8 == 96


def test_tokens_are_found_only_in_plus_forms_of_the_channel_addresses():
    own = ["support@example.com"]
    text = RING.sign(CustomerToken(1, 2, 3))
    assert token_in_address(f"support+{text}@example.com", own) == text
    assert token_in_address(f"<Support+{text.upper()}@Example.COM>", own) == text
    assert token_in_address(f"sales+{text}@example.com", own) is None
    assert token_in_address(f"support+{text}@evil.example", own) is None
    assert token_in_address("support@example.com", own) is None
    assert token_in_address("support+not-base32!@example.com", own) is None
    assert find_token(["someone@else.org", f"support+{text}@example.com"], own) == text
    assert find_token(["support@example.com"], own) is None


@given(tokens)
def test_reply_address_and_token_in_address_round_trip(token):
    text = RING.sign(token)
    address = reply_address("support@example.com", text)
    assert RING.verify(token_in_address(address, ["support@example.com"])) == signed(token)


def test_the_config_builds_the_keyring_from_the_current_and_previous_keys(monkeypatch, tmp_path):
    from gateway.config import ConfigError, parse_config

    old_file = tmp_path / "old_key"
    old_file.write_text("key from the file\n")
    monkeypatch.setenv("GW_TEST_KEY", "current key")
    monkeypatch.setenv("GW_TEST_OLD", "old key")
    config = parse_config(
        {
            "secret_key_env": "GW_TEST_KEY",
            "previous_secret_key_envs": ["GW_TEST_OLD"],
            "previous_secret_key_files": [str(old_file)],
        }
    )
    ring = config.keyring()
    assert ring.verify(Keyring(b"old key").sign(CustomerToken(1, 2, 3))).customer_id == 3
    assert ring.verify(Keyring(b"key from the file").sign(CustomerToken(1, 2, 4))).customer_id == 4
    assert ring.current_id == Keyring(b"current key").current_id
    assert config.agent_token_lifetime == dt.timedelta(days=30)
    monkeypatch.delenv("GW_TEST_OLD")
    with pytest.raises(ConfigError, match="GW_TEST_OLD is not set"):
        config.keyring()


bounce_tokens = st.builds(BounceToken, ids, ids, st.none() | st.integers(0, 1000))


@given(bounce_tokens)
def test_a_return_path_verifies_to_its_row_and_recipient_and_nothing_else(token):
    text = RING.sign(token)
    assert RING.verify_bounce(text) == dataclasses.replace(token, key_id=RING.current_id)
    with pytest.raises(TokenError) as info:
        RING.verify(text)  # never a reply address
    assert info.value.reason == "wrong-kind"
    with pytest.raises(TokenError):
        RING.verify_loop(text)


@given(st.one_of(customer_tokens, agent_tokens))
def test_a_reply_token_is_never_a_return_path(token):
    with pytest.raises(TokenError):
        RING.verify_bounce(RING.sign(token))


@given(small_ids, small_ids, st.integers(0, 50))
def test_a_realistic_return_path_fits_a_local_part_and_survives_case_folding(app, row, rcpt):
    address = bounce_address(RING.sign(BounceToken(app, row, rcpt)), "support.example.com")
    local = address.rpartition("@")[0]
    assert len(local) <= 64 and local == local.lower()
    text = bounce_token_in(address.upper())
    assert text is not None and RING.verify_bounce(text).outbox_id == row
    assert bounce_token_in("support+" + RING.sign(BounceToken(app, row, rcpt)) + "@x") is None


def test_a_loop_mark_verifies_under_rotation_and_not_under_another_key():
    old = Keyring(b"the key before the last rotation")
    mark = old.sign(loop_token(3, "<a@b>"))
    assert (
        Keyring(b"current key of the gateway under test", [b"the key before the last rotation"])
        .verify_loop(mark)
        .app_id
        == 3
    )
    with pytest.raises(TokenError):
        RING.verify_loop(mark)


def test_threads_starting_together_share_one_generated_key(monkeypatch, tmp_path):
    """The embedded default generates its key on first use; the SMTP server, the workers and
    the scheduler all ask at once when the gateway starts."""
    from concurrent.futures import ThreadPoolExecutor

    from gateway.config import parse_config

    monkeypatch.delenv("GATEWAY_SECRET_KEY", raising=False)
    for attempt in range(20):
        config = parse_config({"data_dir": str(tmp_path / str(attempt))})
        with ThreadPoolExecutor(8) as pool:
            ids = {ring.current_id for ring in pool.map(lambda c: c.keyring(), [config] * 8)}
        assert len(ids) == 1
        assert [p.name for p in (tmp_path / str(attempt)).iterdir()] == ["secret_key"]
