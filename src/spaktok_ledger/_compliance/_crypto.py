"""Authenticated encryption (AES-256-GCM) and the keyring that holds the keys.

A ciphertext is a *token*, a short ASCII string that names its key::

    enc1:k:<key id>:<base64url(nonce || ciphertext || tag)>   sealed by a keyring key
    enc1:d:<key id>:<base64url(nonce || ciphertext || tag)>   sealed by a party's data key

The nonce is 96 random bits per token (NIST SP 800-38D, sections 8.2.2
and 8.3: with random nonces, at most 2**32 encryptions per key; a data key
seals a handful of values, a keyring key the wrapped data keys and parked
webhook payloads, and rotation replaces it long before that). The
additional authenticated data binds the token to its key id and to the
*purpose* the caller names (for example ``webhook:evt_123``), so a token
copied to another row or field fails authentication instead of decrypting.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from spaktok_ledger._errors import EncryptionError, InvalidInput

__all__ = [
    "ENV_KEYRING",
    "TOKEN_PREFIX",
    "Keyring",
    "Sensitive",
    "decrypt_with",
    "encrypt_with",
    "is_token",
    "token_key",
]

TOKEN_PREFIX: Final = "enc1:"  # noqa: S105 - a format marker, not a secret
ENV_KEYRING: Final = "SPAKTOK_KEYRING"
KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOKEN = re.compile(r"^enc1:([kd]):([A-Za-z0-9][A-Za-z0-9_.-]{0,63}):([A-Za-z0-9_-]+)$")


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    text = text.strip().replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _aad(kind: str, key_id: str, purpose: str) -> bytes:
    return f"{TOKEN_PREFIX}{kind}:{key_id}:{purpose}".encode()


def encrypt_with(key: bytes, kind: str, key_id: str, plaintext: bytes, purpose: str) -> str:
    """Seal ``plaintext`` with ``key`` into a token naming ``key_id``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext, _aad(kind, key_id, purpose))
    return f"{TOKEN_PREFIX}{kind}:{key_id}:{_b64encode(nonce + sealed)}"


def decrypt_with(key: bytes, token: str, purpose: str) -> bytes:
    """Open a token sealed by ``key`` for ``purpose`` (``EncryptionError`` if it fails)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    kind, key_id, body = _parse(token)
    try:
        raw = _b64decode(body)
        return AESGCM(key).decrypt(
            raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(kind, key_id, purpose)
        )
    except (InvalidTag, ValueError, binascii.Error) as exc:
        raise EncryptionError(
            f"a ciphertext sealed by key {key_id!r} failed authentication "
            f"(tampered, or opened for another purpose than {purpose!r})",
            key_id=key_id,
        ) from exc


def is_token(value: object) -> bool:
    """True for a string that is one of our ciphertext tokens."""
    return isinstance(value, str) and _TOKEN.match(value) is not None


def token_key(token: str) -> tuple[str, str]:
    """``("k" | "d", key id)`` of a token: which kind of key sealed it, and which key."""
    kind, key_id, _ = _parse(token)
    return kind, key_id


def _parse(token: str) -> tuple[str, str, str]:
    match = _TOKEN.match(token) if isinstance(token, str) else None
    if match is None:
        raise EncryptionError("not a ciphertext token of this library")
    return match.group(1), match.group(2), match.group(3)


class Keyring:
    """The keys that protect data at rest: AES-256 keys by id, one of them active.

    The active key seals new data (and wraps new per-party data keys); the
    others only open what they sealed before, until ``spaktok-ledger
    rotate-keys`` has re-encrypted it under the active key. Configure it from
    the environment (``SPAKTOK_KEYRING``: ``id:base64key`` entries separated by
    commas, the first one active) or pass the keys from your secrets manager::

        keyring = Keyring.from_env()                       # SPAKTOK_KEYRING
        keyring = Keyring({"2026-07": key_bytes}, active="2026-07")

    The keys never appear in a ``repr``, an error message or a log line.

    >>> entry = Keyring.generate_entry("k1")
    >>> Keyring.parse(entry).active_key_id
    'k1'
    """

    __slots__ = ("_active", "_keys")

    def __init__(self, keys: Mapping[str, bytes], *, active: str | None = None) -> None:
        if not isinstance(keys, Mapping) or not keys:
            raise InvalidInput("a keyring needs at least one key")
        checked: dict[str, bytes] = {}
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
                raise InvalidInput(
                    f"key ids are 1-64 letters, digits or _.- (starting with a letter or "
                    f"digit), got {key_id!r}"
                )
            if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
                raise InvalidInput(f"key {key_id!r} must be {KEY_BYTES} bytes (AES-256)")
            checked[key_id] = bytes(key)
        active = next(iter(checked)) if active is None else active
        if active not in checked:
            raise InvalidInput(f"the active key {active!r} is not in the keyring")
        self._keys = checked
        self._active = active

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """A keyring from ``id:base64key[,id:base64key...]`` (the first is active)."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput("the keyring text is empty")
        keys: dict[str, bytes] = {}
        for item in text.split(","):
            key_id, sep, encoded = item.strip().partition(":")
            if not sep:
                raise InvalidInput("keyring entries are id:base64key, separated by commas")
            try:
                keys[key_id.strip()] = _b64decode(encoded)
            except (ValueError, binascii.Error) as exc:
                raise InvalidInput(f"key {key_id.strip()!r} is not base64") from exc
        return cls(keys)

    @classmethod
    def from_env(
        cls, name: str = ENV_KEYRING, environ: Mapping[str, str] | None = None
    ) -> Keyring | None:
        """The keyring in environment variable ``name``, or None when it is unset."""
        value = (os.environ if environ is None else environ).get(name, "").strip()
        return cls.parse(value) if value else None

    @staticmethod
    def generate_entry(key_id: str) -> str:
        """A new random key as a keyring entry, ``id:base64key`` (for ``SPAKTOK_KEYRING``)."""
        if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
            raise InvalidInput(f"not a valid key id: {key_id!r}")
        return f"{key_id}:{_b64encode(secrets.token_bytes(KEY_BYTES))}"

    @property
    def active_key_id(self) -> str:
        return self._active

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __repr__(self) -> str:
        return f"Keyring(active={self._active!r}, key_ids={list(self._keys)!r})"

    def encrypt(self, plaintext: bytes, *, purpose: str) -> str:
        """Seal ``plaintext`` with the active key."""
        return encrypt_with(self._keys[self._active], "k", self._active, plaintext, purpose)

    def decrypt(self, token: str, *, purpose: str) -> bytes:
        """Open a token sealed by one of this keyring's keys."""
        kind, key_id, _ = _parse(token)
        if kind != "k":
            raise EncryptionError("this token was sealed by a data key, not a keyring key")
        key = self._keys.get(key_id)
        if key is None:
            raise EncryptionError(
                f"key {key_id!r} is not in the keyring (keys: {', '.join(self._keys)}): add it "
                "back until `spaktok-ledger rotate-keys` has moved everything to the active key",
                key_id=key_id,
            )
        return decrypt_with(key, token, purpose)


@dataclass(frozen=True, slots=True)
class Sensitive:
    """Marks a metadata value as personal data: it is stored sealed with the party's data key.

    ``economy.register_streamer("bob", metadata={"email": Sensitive("bob@example.com")})``
    stores a ciphertext token instead of the address; ``Compliance.reveal`` opens it,
    and ``erase_user`` makes it unreadable for good. The value never shows in a ``repr``.
    """

    value: Any

    def __repr__(self) -> str:
        return "Sensitive(***)"
