"""Who may use the /admin routes: closed until the config names admin keys (`[admin] keys`,
sent as `Authorization: Bearer <key>`) or AI00 app keys (`[[admin.app_keys]]`, traded at
`POST /api/auth/exchange` for an HS256 token sent the same way or as `?admin_token=`)."""
from __future__ import annotations

import secrets
import time

from ..config import AdminConfig
from . import jwt_hs256
from .errors import ApiError

DISABLED_MESSAGE = ("the admin routes are disabled: add keys = [\"<a long random key>\"] under [admin] in the "
                    "config (or [[admin.app_keys]] app_id and secret_key for AI00's token exchange), restart, "
                    "and send Authorization: Bearer <key>")


class AdminGuard:
    def __init__(self, config: AdminConfig) -> None:
        self.keys = [key.encode() for key in config.keys if key]
        self.app_keys = [(k.app_id.encode(), k.secret_key.encode()) for k in config.app_keys]
        self.expire_sec = config.expire_sec
        # without a configured secret, tokens are signed with one that dies with the process
        self.secret = config.jwt_secret.encode() if config.jwt_secret else secrets.token_bytes(32)

    @property
    def enabled(self) -> bool:
        return bool(self.keys or self.app_keys)

    def check(self, authorization: str, query_token: str | None) -> None:
        """Raises the ApiError (403 when closed, 401 for a missing or wrong credential)."""
        if not self.enabled:
            raise ApiError(403, DISABLED_MESSAGE, "invalid_request_error", None, "admin_disabled")
        given = authorization[7:].strip() if authorization.lower().startswith("bearer ") else (query_token or "")
        raw = given.encode("utf-8", "surrogateescape")
        if raw and any(secrets.compare_digest(raw, key) for key in self.keys):
            return
        if self.app_keys and given.count(".") == 2:  # a JWT, not a mistyped key
            try:
                jwt_hs256.decode(given, self.secret)
                return
            except jwt_hs256.JwtError as error:
                raise ApiError(401, f"invalid admin token: {error}", "invalid_request_error", None,
                               "invalid_admin_key") from None
        raise ApiError(401, "missing or invalid admin key (Authorization: Bearer <key from [admin] keys>)",
                       "invalid_request_error", None, "invalid_admin_key")

    def exchange(self, app_id: str, app_secret: str) -> str | None:
        """A token for a configured (app_id, secret) pair; None for any other."""
        given = (app_id.encode("utf-8", "surrogateescape"), app_secret.encode("utf-8", "surrogateescape"))
        # every pair is compared, so the time taken tells nothing about which part was wrong
        matches = [secrets.compare_digest(given[0], i) & secrets.compare_digest(given[1], s) for i, s in self.app_keys]
        if not any(matches):
            return None
        return jwt_hs256.encode({"sid": app_id, "exp": int(time.time()) + self.expire_sec}, self.secret)
