"""Hold tokens: the bearer secret that proves who holds a reservation.

Only a token's SHA-256 is stored. A hold made with an Idempotency-Key gets a token derived
from the key and the server secret, so a replay can hand it out again without storing it.
"""

import base64
import hashlib
import hmac
import secrets


def new_token() -> tuple[str, bytes]:
    """A random bearer token and the hash we store; the token itself is never stored."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def token_for_key(secret: bytes, idempotency_key: str, scope: str, request_hash: bytes) -> str:
    """The token of a hold made with an Idempotency-Key, derived from the key.

    A replay must hand the buyer the same token, yet no token may be stored. Keyed by the
    server secret, which the database never holds, over the key, which only the buyer and
    its requests know: neither a database backup nor someone who knows the key and the body
    can compute it offline (a replay still hands it to whoever sends the key and the body,
    which is why keys must carry 128 random bits).
    """
    message = (
        b"boxoffice hold token\0"
        + idempotency_key.encode()
        + b"\0"
        + scope.encode()
        + b"\0"
        + request_hash
    )
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def token_pair(token: str | None) -> tuple[str, bytes]:
    """The given token (a keyed request's) and its hash, or a new random one."""
    return (token, hash_token(token)) if token is not None else new_token()


def token_matches(token: str | None, stored_hash: bytes) -> bool:
    return token is not None and hmac.compare_digest(hash_token(token), bytes(stored_hash))
