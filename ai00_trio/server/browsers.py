"""What a browser may do: CORS for the origins the config lets in (none by default: same origin
only), and JSON bodies on every POST. A web page on another origin can send a "simple" request
(text/plain, form bodies) without asking first; requiring application/json makes the browser
ask with a preflight, which only allowed origins pass."""
from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio

from .errors import ApiError

ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOWED_HEADERS = ("Authorization", "Content-Type")
EXPOSED_HEADERS = "Retry-After"
PREFLIGHT_MAX_AGE_S = 600
BODY_METHODS = ("POST", "PUT", "PATCH")


def unsupported_media_type(given: str) -> ApiError:
    return ApiError(415, f"request bodies must be JSON: send Content-Type: application/json (got {given!r})",
                    "invalid_request_error", None, "unsupported_media_type")


def register_browser_policy(app: QuartTrio, origins: list[str], error_response) -> None:
    """Hooks on `app`: call before the hooks that authenticate (a preflight carries no key)."""
    any_origin = "*" in origins
    allowed = set(origins)

    def allowed_origin() -> str | None:
        origin = request.headers.get("Origin")
        if origin is None or not (any_origin or origin in allowed):
            return None
        return "*" if any_origin else origin

    @app.before_request
    async def preflight():
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        origin = allowed_origin()
        if origin is None:  # no CORS headers: the browser refuses the request it asked about
            return Response(b"", status=204)
        asked = [h.strip() for h in request.headers.get("Access-Control-Request-Headers", "").split(",") if h.strip()]
        extra = [h for h in asked if h.lower() not in {a.lower() for a in ALLOWED_HEADERS}]
        response = Response(b"", status=204)
        response.headers.update({
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ", ".join((*ALLOWED_HEADERS, *extra)),
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
        })
        return response

    @app.before_request
    async def json_bodies_only():
        if request.method not in BODY_METHODS or request.url_rule is None:
            return None  # an unknown route is a 404 whatever its body
        if "Content-Type" not in request.headers and not await request.get_data():
            return None  # no body at all (AI00 clients POST some admin routes bare): nothing to read as text
        charset = request.mimetype_params.get("charset", "utf-8").lower()
        if request.mimetype != "application/json" or charset not in ("utf-8", "utf8"):
            return error_response(unsupported_media_type(request.headers.get("Content-Type", "")))
        return None

    @app.after_request
    async def allow_origin(response: Response) -> Response:
        origin = allowed_origin()
        if origins:
            response.vary.add("Origin")
        if origin is not None and "Access-Control-Allow-Origin" not in response.headers:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        return response
