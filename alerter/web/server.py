"""The service's web server (aiohttp) on `ALERTER_HTTP_LISTEN`; off when that is empty.

- `GET /healthz`: the service's one verdict (`health`, the callable the composition
  root passes: `Service.health`), as JSON; 200 when healthy, 503 with the reasons when
  not. It judges nothing itself.
- `GET /metrics`: `metrics.REGISTRY` in Prometheus' text format; the counters are
  incremented by the tasks, the state's gauges are read at each scrape.
- `GET /status`: `alerter.report` as JSON, only with `ALERTER_STATUS_TOKEN` (`?token=`,
  `Authorization: Bearer` or the board's cookie, compared in constant time): 404 without
  a configured token, 401 and nothing else with a wrong or missing one. A browser (one
  that prefers `text/html`) gets the incident board instead (`alerter.web.board`,
  `alerter.web.pages`), or a form for the token (`POST /status`); a token accepted from
  the form or from `?token=` is kept in a cookie and the browser is sent back to a bare
  `/status` (no token in its address bar or history). The cookie holds an HMAC of the
  token, never the token: `HttpOnly`, `SameSite=Strict`, `Path=/status`, a week, and
  `Secure` when the request came over https (here, or through a proxy on this host that
  says `X-Forwarded-Proto: https`). Wrong tokens count against the client's address:
  after `LOGINS_PER_MINUTE` in a minute it gets 429 until the minute is over.
- `GET`, `POST /ack/{token}`: the acknowledgement page (`alerter.web.views`), when the
  composition root hands an `AckDesk` (else 404, like any unknown path).
- `GET /static/...`: the pages' own CSS and script, and a pinned Leaflet (`static/leaflet`,
  its LICENSE beside it); the only responses that may be cached.

Every other response carries `Cache-Control: no-store` and `guard.SECURITY_HEADERS`
(no framing, no referrer, a Content-Security-Policy of the service's own files); every
body leaves through the masker with the settings' secrets, and feed ids are shortened
(`mask_id`) wherever they appear. Every 404 is the same page.
A failure to listen is logged and the service goes on: the web server never holds back
a HELP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from alerter import masking, metrics, report
from alerter.clock import Clock
from alerter.errors import ConfigError, Problem, StoreError
from alerter.settings import Settings, mask_id
from alerter.settings import parse_listen as settings_listen
from alerter.store import Store
from alerter.vitals import Health
from alerter.web import board, pages
from alerter.web.ack import AckDesk, FormProof
from alerter.web.guard import (
    SECURITY_HEADERS,
    RateLimiter,
    came_over_https,
    client_address,
    derive_key,
    foreign_request,
    mac_hex,
)
from alerter.web.views import AckViews

log = logging.getLogger("alerter.web")

#: How long in-flight requests may finish when the server stops.
SHUTDOWN_GRACE = 2.0
#: The pages' own files (CSS, script, Leaflet).
STATIC = Path(__file__).parent / "static"
#: The board's cookie: an HMAC of the status token, for a week.
COOKIE = "alerter_status"
COOKIE_MAX_AGE = 7 * 86400
#: Wrong status tokens per client address per minute before it gets 429.
LOGINS_PER_MINUTE = 10


def parse_listen(value: str) -> tuple[str, int] | None:
    """`ALERTER_HTTP_LISTEN` as (host, port), None when off; ConfigError naming it."""
    try:
        return settings_listen(value)
    except ValueError as exc:
        raise ConfigError([Problem("ALERTER_HTTP_LISTEN", None, str(exc))]) from None


class WebServer:
    """`/healthz`, `/metrics` and `/status` for one service; `start`/`stop` or `serving`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Clock,
        health: Callable[[], Health],
        *,
        registry: CollectorRegistry = metrics.REGISTRY,
        ack_desk: AckDesk | None = None,
        key: bytes | None = None,
    ) -> None:
        """`ack_desk`: the incidents behind /ack/ links (None: no such pages). `key`: a
        stable secret (the service's acknowledgement key) that the forms' proofs and the
        board's cookie are derived from, so both outlive a restart; else
        `ALERTER_SECRET_KEY`; else a random one per process."""
        self.settings = settings
        self.store = store
        self.clock = clock
        self.health = health
        self.registry = registry
        self.listen = parse_listen(settings.http_listen)  # ConfigError at construction
        token = settings.status_token.get_secret_value() if settings.status_token else ""
        self._token = token.encode()
        self._secrets = report.secrets(settings)
        secret = key or (settings.secret_key.get_secret_value() if settings.secret_key else None)
        self._cookie = mac_hex(derive_key(secret, "status cookie"), "status", self._token)
        self.logins = RateLimiter(LOGINS_PER_MINUTE)
        self._static = {
            p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file()
        }
        self.ack = AckViews(
            ack_desk, clock, settings.zone, FormProof(derive_key(secret, "ack form")),
            settings.public_url, self._html,
        )  # fmt: skip
        self._runner: web.AppRunner | None = None
        self._collector: metrics.StateCollector | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        """The port it listens on (the OS's choice for port 0), None when not listening."""
        if self._runner is None or not self._runner.addresses:
            return None
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str | None:
        """Its base URL, None when not listening."""
        if self.listen is None or self.port is None:
            return None
        host = self.listen[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def start(self) -> bool:
        """Listen; False when off or the address cannot be used (logged, not raised)."""
        if self.listen is None:
            log.info("web server off (ALERTER_HTTP_LISTEN is empty)")
            return False
        if self._runner is not None:
            return True
        host, port = self.listen
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            log.error(  # noqa: TRY400 (the address and the reason are all an admin needs)
                "web server: cannot listen on %s: %s; /healthz, /metrics and /status are off",
                self.settings.http_listen,
                exc.strerror or exc,
            )
            return False
        self._runner = runner
        collector = metrics.StateCollector(self._reading)
        try:
            self.registry.register(collector)
            self._collector = collector
        except ValueError:  # a second server in this process (tests): its counters still go
            log.warning("web server: another one in this process exposes the state's gauges")
        log.info(
            "web server on %s: /healthz, /metrics%s",
            self.url,
            ", /status" if self._token else " (/status off: no ALERTER_STATUS_TOKEN)",
        )
        return True

    async def stop(self) -> None:
        """Stop listening (requests in flight get `SHUTDOWN_GRACE`)."""
        if self._collector is not None:
            self.registry.unregister(self._collector)
            self._collector = None
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[WebServer]:
        """Listen for the duration of the block (if it can: see `start`)."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set (as a task beside the others; never ends before)."""
        async with self.serving():
            await stop.wait()

    # -- the application ---------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application (the paths above; the rest is 404/405)."""
        app = web.Application(middlewares=[_one_not_found], client_max_size=64 * 1024)
        app.router.add_get("/healthz", self.get_healthz)
        app.router.add_get("/metrics", self.get_metrics)
        app.router.add_get("/status", self.get_status)
        app.router.add_post("/status", self.post_status)
        app.router.add_get("/ack/{token}", self.ack.get)
        app.router.add_post("/ack/{token}", self.ack.post)
        app.router.add_get("/static/{path:.+}", self.get_static)
        app.on_response_prepare.append(_no_store)
        return app

    async def get_static(self, request: web.Request) -> web.StreamResponse:
        """One of the files shipped in `STATIC` (listed at start: nothing else is reachable)."""
        found = self._static.get(request.match_info["path"])
        if found is None:
            raise web.HTTPNotFound
        return web.FileResponse(found)

    async def get_healthz(self, _: web.Request) -> web.Response:
        """The service's verdict: 200 when healthy, else 503 with the reasons."""
        health = self.health()
        return self._json(
            report.health_json(health, self.clock.now()), status=200 if health.healthy else 503
        )

    async def get_metrics(self, _: web.Request) -> web.Response:
        """Prometheus' text format."""
        body = self._clean(generate_latest(self.registry))
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})

    async def get_status(self, request: web.Request) -> web.Response:
        """The report, with the status token only: the board for a browser, else JSON."""
        if not self._token:
            raise web.HTTPNotFound
        html = _wants_html(request)
        client = client_address(request)
        if self.logins.spent(client):
            return self._too_many(html)
        ok, presented = self._authorized(request)
        if not ok:
            if presented:
                self.logins.hit(client)
            if html:
                return self._html(pages.login_page(wrong=presented), 401)
            return web.Response(status=401, headers={hdrs.WWW_AUTHENTICATE: "Bearer"})
        if html and "token" in request.query:
            return self._signed_in(request)
        now = self.clock.now()
        try:
            if html:
                built = board.gather(self.store, self.settings, now, self.health())
                return self._html(pages.board_page(built, self.settings.zone))
            body = report.build(self.store, self.settings, now, self.health())
        except StoreError:
            log.exception("/status: cannot read the state")
            if html:
                page = pages.message_page("Status unavailable", "The state cannot be read.")
                return self._html(page, 503)
            return self._json({"error": "the state database cannot be read"}, status=503)
        return self._json(body)

    async def post_status(self, request: web.Request) -> web.Response:
        """The board's token form: the right token sets the cookie."""
        if not self._token:
            raise web.HTTPNotFound
        client = client_address(request)
        if not self.logins.hit(client):
            return self._too_many(html=True)
        if foreign_request(request, self.settings.public_url):
            return self._html(pages.refused_page(), 403)
        form = await request.post()
        given = form.get("token")
        if isinstance(given, str) and hmac.compare_digest(given.strip().encode(), self._token):
            return self._signed_in(request)
        return self._html(pages.login_page(wrong=True), 401)

    def _signed_in(self, request: web.Request) -> web.Response:
        """Back to a bare /status, with the cookie (see the module's docstring)."""
        response = web.Response(status=303, headers={hdrs.LOCATION: "/status"})
        response.set_cookie(
            COOKIE, self._cookie, max_age=COOKIE_MAX_AGE, path="/status",
            httponly=True, samesite="Strict", secure=came_over_https(request),
        )  # fmt: skip
        return response

    def _authorized(self, request: web.Request) -> tuple[bool, bool]:
        """(a credential matches, a token was presented): each compared in constant time;
        the cookie holds `self._cookie` (an HMAC of the token)."""
        scheme, _, bearer = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        given = [request.query.get("token", "")]
        if scheme.lower() == "bearer":
            given.append(bearer.strip())
        ok = False
        for candidate in given:
            ok |= hmac.compare_digest(candidate.encode(), self._token)
        cookie = request.cookies.get(COOKIE, "")
        ok |= hmac.compare_digest(cookie.encode(), self._cookie.encode())
        return ok, any(given)

    # -- what leaves -------------------------------------------------------------------------

    def _reading(self) -> metrics.StateReading:
        return report.metrics_reading(self.store, self.settings, self.clock.now(), self.health())

    def _json(self, data: Any, *, status: int = 200) -> web.Response:
        body = self._clean(json.dumps(data).encode())
        return web.Response(body=body, status=status, content_type="application/json")

    def _html(self, page: pages.Html, status: int = 200) -> web.Response:
        body = self._clean(page.encode())
        return web.Response(body=body, status=status, content_type="text/html", charset="utf-8")

    def _too_many(self, html: bool) -> web.Response:
        response = self._html(pages.too_many_page(), 429) if html else web.Response(status=429)
        response.headers[hdrs.RETRY_AFTER] = "60"
        return response

    def _clean(self, body: bytes) -> bytes:
        """Masked (every registered secret and the settings' own), feed ids shortened."""
        body = masking.mask_bytes(body, *self._secrets)
        for feed in self.settings.feeds:
            body = body.replace(feed.id.encode(), mask_id(feed.id).encode())
        return body


def _wants_html(request: web.Request) -> bool:
    """True when the client prefers HTML to JSON (a browser), by its Accept header."""
    quality: dict[str, float] = {}
    for item in request.headers.get(hdrs.ACCEPT, "").split(","):
        kind, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        key = kind.lower()
        quality[key] = max(quality.get(key, 0.0), q)
    html = quality.get("text/html", 0.0)
    json_q = quality.get("application/json", quality.get("*/*", 0.0))
    return html > json_q


_NOT_FOUND = pages.message_page(
    "Not found",
    "There is nothing here. A link from an alert stops working when its incident is over.",
).encode()


@web.middleware
async def _one_not_found(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every 404 is this one page: an unknown path, a refused token, a missing file."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return web.Response(body=_NOT_FOUND, status=404, content_type="text/html", charset="utf-8")


async def _no_store(request: web.Request, response: web.StreamResponse) -> None:
    static = request.path.startswith("/static/") and response.status in (200, 304)
    response.headers[hdrs.CACHE_CONTROL] = "public, max-age=3600" if static else "no-store"
    response.headers.update(SECURITY_HEADERS)
