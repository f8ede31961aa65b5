"""What every page is protected by: headers, rate limits, where a request came from, keys.

- `SECURITY_HEADERS` go on every response (404s included, so a refused token's 404 is the
  same as any unknown path's): no framing, no referrer (the ack link is a capability: it
  must never reach another site in a Referer), a Content-Security-Policy allowing only the
  service itself, plus OpenStreetMap's tiles as images for the board's map.
- `RateLimiter`: a sliding window per client address, in real (monotonic) time, not the
  service's clock (the demo's and the tests' clocks run faster than the clients do).
- `client_address`: the peer's address; behind a reverse proxy on the same host (a
  loopback peer) the last `X-Forwarded-For` entry, the one that proxy added. A peer
  elsewhere cannot choose its bucket by sending the header.
- `came_over_https`: TLS here, or `X-Forwarded-Proto: https` from a loopback proxy:
  the board's cookie is `Secure` then (over plain http a Secure cookie would never come
  back, and the board would be unusable on a loopback or LAN address).
- `foreign_request`: a POST whose `Origin`, `Referer` or `Sec-Fetch-Site` names another
  site. Absent headers say nothing, and neither does `Origin: null`: our own pages send
  `Referrer-Policy: no-referrer`, under which browsers send exactly that on a form POST.
  The form's proof is what a POST must carry; these checks only add to it.
- `derive_key`: one key per purpose from a stable secret (the service's acknowledgement
  key, or `ALERTER_SECRET_KEY`), or a random one per process when there is none (served
  forms and board cookies then last until a restart).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import hdrs, web

#: Tiles for the board's map are the one thing loaded from elsewhere, by the viewer.
TILES = "https://tile.openstreetmap.org"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        f"img-src 'self' data: {TILES}",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
}

#: Sec-Fetch-Site values of a request the service's own page made (or the user typed).
_OWN_SITE = frozenset({"same-origin", "none"})


class RateLimiter:
    """At most `limit` events per `per` seconds per client (a sliding window)."""

    def __init__(
        self,
        limit: int,
        per: float = 60.0,
        *,
        timer: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        self.limit = limit
        self.per = per
        self._timer = timer
        self._max_clients = max_clients
        self._seen: dict[str, collections.deque[float]] = {}

    def hit(self, client: str) -> bool:
        """Count one event for `client`; False when it is over its limit (not counted)."""
        now = self._timer()
        times = self._seen.get(client)
        if times is None:
            if len(self._seen) >= self._max_clients:
                self._forget(now)
            times = self._seen[client] = collections.deque()
        self._expire(times, now)
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True

    def spent(self, client: str) -> bool:
        """True when `client` has used up its limit (counts nothing)."""
        times = self._seen.get(client)
        if times is None:
            return False
        self._expire(times, self._timer())
        return len(times) >= self.limit

    def _expire(self, times: collections.deque[float], now: float) -> None:
        while times and times[0] <= now - self.per:
            times.popleft()

    def _forget(self, now: float) -> None:
        """Drop the clients whose window is over; if all are busy, the oldest half."""
        for client in [c for c, t in self._seen.items() if not t or t[-1] <= now - self.per]:
            del self._seen[client]
        if len(self._seen) >= self._max_clients:
            for client in list(self._seen)[: len(self._seen) // 2]:
                del self._seen[client]


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def client_address(request: web.Request) -> str:
    """Who to count a request against (see the module's docstring)."""
    peer = request.remote or "unknown"
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded and _is_loopback(peer):
        last = forwarded.split(",")[-1].strip()
        if last:
            return last
    return peer


def came_over_https(request: web.Request) -> bool:
    """TLS to this server, or to the reverse proxy on this host in front of it."""
    if request.secure:
        return True
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return proto == "https" and _is_loopback(request.remote)


def _origin(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def own_origins(request: web.Request, public_url: str | None) -> set[str]:
    """The origins this server answers as: its Host (either scheme) and the public URL's."""
    host = request.host.lower()
    origins = {f"http://{host}", f"https://{host}"}
    public = _origin(public_url) if public_url else None
    if public:
        origins.add(public)
    return origins


def foreign_request(request: web.Request, public_url: str | None) -> bool:
    """True when the request says it came from another site (see the docstring)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in _OWN_SITE:
        return True
    ours = own_origins(request, public_url)
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and origin.strip() != "null" and _origin(origin.strip()) not in ours:
        return True
    referer = request.headers.get(hdrs.REFERER)
    return bool(referer) and _origin(referer or "") not in ours


def derive_key(secret: bytes | str | None, purpose: str) -> bytes:
    """A key for one purpose: from the secret when set, else random for this process."""
    if not secret:
        return secrets.token_bytes(32)
    raw = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(raw, b"alerter web: " + purpose.encode(), hashlib.sha256).digest()


def mac_hex(key: bytes, label: str, value: bytes) -> str:
    """HMAC-SHA256 of `value` under `key`, labelled (one key never signs two kinds)."""
    return hmac.new(key, label.encode() + b"\0" + value, hashlib.sha256).hexdigest()
