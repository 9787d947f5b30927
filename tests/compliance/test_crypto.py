"""The keyring and AES-GCM tokens: key ids in every ciphertext, authentication, no leaks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spaktok_ledger import InvalidInput
from spaktok_ledger._compliance._crypto import is_token, token_key
from spaktok_ledger.compliance import EncryptionError, Keyring, Sensitive
from tests.compliance.conftest import KEY_1, KEY_2

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def test_a_token_names_its_key_and_kind() -> None:
    """Every ciphertext starts with enc1, the kind of key and the key's id."""
    ring = Keyring({"2026-07": KEY_1})
    token = ring.encrypt(b"secret", purpose="p")
    assert token.startswith("enc1:k:2026-07:")
    assert is_token(token) and token_key(token) == ("k", "2026-07")
    assert ring.decrypt(token, purpose="p") == b"secret"


def test_the_same_plaintext_seals_differently_each_time() -> None:
    """A random nonce per token: equal values are not recognisable in the database."""
    ring = Keyring({"k": KEY_1})
    assert ring.encrypt(b"x", purpose="p") != ring.encrypt(b"x", purpose="p")


def test_tampering_and_another_purpose_fail_authentication() -> None:
    """A flipped byte, a token moved to another purpose, or the wrong key: EncryptionError."""
    ring = Keyring({"k": KEY_1})
    token = ring.encrypt(b"alice@example.com", purpose="party:alice")
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad, purpose in [(flipped, "party:alice"), (token, "party:bob")]:
        with pytest.raises(EncryptionError):
            ring.decrypt(bad, purpose=purpose)
    impostor = Keyring({"k": KEY_2})
    with pytest.raises(EncryptionError, match="failed authentication"):
        impostor.decrypt(token, purpose="party:alice")


def test_a_key_missing_from_the_keyring_is_named() -> None:
    """A token under a retired key says which key to put back."""
    old = Keyring({"old": KEY_1})
    token = old.encrypt(b"x", purpose="p")
    with pytest.raises(EncryptionError, match="'old' is not in the keyring") as info:
        Keyring({"new": KEY_2}).decrypt(token, purpose="p")
    assert info.value.details["key_id"] == "old"


def test_keyring_from_environment_and_text() -> None:
    """SPAKTOK_KEYRING: id:base64 entries, comma separated, the first one active."""
    text = f"{Keyring.generate_entry('new')},{Keyring.generate_entry('old')}"
    ring = Keyring.from_env(environ={"SPAKTOK_KEYRING": text})
    assert ring is not None
    assert (ring.active_key_id, ring.key_ids) == ("new", ("new", "old"))
    assert Keyring.from_env(environ={}) is None
    old_token = Keyring.parse(text.split(",")[1]).encrypt(b"v", purpose="p")
    assert ring.decrypt(old_token, purpose="p") == b"v"


@pytest.mark.parametrize(
    "bad",
    ["", "k1", "k1:not base64!", f"k1:{'A' * 10}", "bad id:AAAA", f"{'x' * 70}:AAAA"],
)
def test_malformed_keyrings_are_refused(bad: str) -> None:
    """Keys are 32 bytes (AES-256) under short ids; anything else is InvalidInput."""
    with pytest.raises(InvalidInput):
        Keyring.parse(bad)


def test_no_key_in_a_repr_or_an_error() -> None:
    """Neither the keyring's repr nor a Sensitive value shows what it holds."""
    ring = Keyring({"k": KEY_1})
    assert KEY_1.hex() not in repr(ring) and "k" in repr(ring)
    assert repr(Sensitive("alice@example.com")) == "Sensitive(***)"
    with pytest.raises(InvalidInput) as info:
        Keyring({"k": KEY_1}, active="other")
    assert KEY_1.hex() not in str(info.value)


@given(value=json_values, purpose=st.text(max_size=20))
def test_seal_and_open_round_trip(value, purpose: str) -> None:
    """Any JSON value comes back as it went in; the token is ASCII and never holds it."""
    ring = Keyring({"k": KEY_1})
    plain = json.dumps(value, sort_keys=True).encode()
    token = ring.encrypt(plain, purpose=purpose)
    assert token.isascii() and is_token(token)
    assert ring.decrypt(token, purpose=purpose) == plain
    if len(plain) >= 8:
        assert plain.decode() not in token
