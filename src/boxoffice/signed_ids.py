"""Tokens that are an id signed with the server secret: `<id hex>.<signature>`.

A waiting-room place and a waiting-list entry each hand their holder one. It proves the id
without a database read (a forged or mangled token is refused at once), and it is derived,
never stored, so a database backup cannot produce one. `purpose` keeps one kind of token from
passing for another.
"""

import hashlib
import hmac
import uuid


def _signature(secret: bytes, purpose: bytes, signed_id: uuid.UUID) -> str:
    digest = hmac.new(secret, purpose + b":" + signed_id.bytes, hashlib.sha256).digest()
    return digest[:16].hex()


def sign_id(secret: bytes, purpose: bytes, signed_id: uuid.UUID) -> str:
    return f"{signed_id.hex}.{_signature(secret, purpose, signed_id)}"


def signed_id_of(secret: bytes, purpose: bytes, token: str) -> uuid.UUID | None:
    """The id a token names, if the server signed it for this purpose; None otherwise."""
    id_hex, _, signature = token.partition(".")
    try:
        signed_id = uuid.UUID(hex=id_hex)
    except ValueError:
        return None
    expected = _signature(secret, purpose, signed_id)
    if len(id_hex) != 32 or not hmac.compare_digest(signature, expected):
        return None
    return signed_id
