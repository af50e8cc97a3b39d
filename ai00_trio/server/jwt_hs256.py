"""HS256 JSON Web Tokens (RFC 7519), the kind AI00's `/api/auth/exchange` hands out, with the
standard library alone."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

HEADER = {"alg": "HS256", "typ": "JWT"}


class JwtError(ValueError):
    pass


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise JwtError("the token is not base64url") from None


def _signature(signing_input: str, secret: bytes) -> bytes:
    return hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()


def encode(claims: dict, secret: bytes) -> str:
    signing_input = f"{_b64(json.dumps(HEADER, separators=(',', ':')).encode())}." \
                    f"{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    return f"{signing_input}.{_b64(_signature(signing_input, secret))}"


def decode(token: str, secret: bytes, now: float | None = None) -> dict:
    """The claims of a token signed with `secret` whose `exp` (required) has not passed;
    JwtError otherwise. Only HS256 is accepted, whatever the token's header says."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise JwtError("the token is not a JWT (three base64url parts)")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise JwtError("the token's header or claims are not JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise JwtError("only HS256 tokens are accepted")
    if not hmac.compare_digest(_unb64(parts[2]), _signature(f"{parts[0]}.{parts[1]}", secret)):
        raise JwtError("the token's signature does not match")
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise JwtError("the token has no expiry (exp)")
    if exp <= (time.time() if now is None else now):
        raise JwtError("the token has expired")
    return claims
