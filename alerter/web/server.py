"""The service's web server (aiohttp) on `ALERTER_HTTP_LISTEN`; off when that is empty.

- `GET /healthz`: the service's one verdict (`health`, the callable the composition
  root passes: `Service.health`), as JSON; 200 when healthy, 503 with the reasons when
  not. It judges nothing itself.
- `GET /metrics`: `metrics.REGISTRY` in Prometheus' text format; the counters are
  incremented by the tasks, the state's gauges are read at each scrape.
- `GET /status`: `alerter.report` as JSON, only with `ALERTER_STATUS_TOKEN` (`?token=` or
  `Authorization: Bearer`, compared in constant time): 404 without a configured token,
  401 and nothing else with a wrong or missing one.

Every response carries `Cache-Control: no-store`; every body leaves through the masker
with the settings' secrets, and feed ids are shortened (`mask_id`) wherever they appear.
A failure to listen is logged and the service goes on: the web server never holds back
a HELP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from alerter import masking, metrics, report
from alerter.clock import Clock
from alerter.errors import ConfigError, Problem, StoreError
from alerter.settings import Settings, mask_id
from alerter.store import Store
from alerter.vitals import Health

log = logging.getLogger("alerter.web")

#: How long in-flight requests may finish when the server stops.
SHUTDOWN_GRACE = 2.0


def parse_listen(value: str) -> tuple[str, int] | None:
    """`host:port` or `[v6-address]:port` as (host, port); None when empty (off)."""
    text = value.strip()
    if not text:
        return None
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        if ":" in host:
            sep = ""  # a bare IPv6 address: its port is ambiguous
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            [
                Problem(
                    "ALERTER_HTTP_LISTEN",
                    None,
                    f"expected host:port (127.0.0.1:8787, [::1]:8787) or empty, got {value!r}",
                )
            ]
        )
    return host, int(port)


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
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.health = health
        self.registry = registry
        self.listen = parse_listen(settings.http_listen)  # ConfigError at construction
        token = settings.status_token.get_secret_value() if settings.status_token else ""
        self._token = token.encode()
        self._secrets = report.secrets(settings)
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
        """The aiohttp application (GET and HEAD on three paths; the rest is 404/405)."""
        app = web.Application()
        app.router.add_get("/healthz", self.get_healthz)
        app.router.add_get("/metrics", self.get_metrics)
        app.router.add_get("/status", self.get_status)
        app.on_response_prepare.append(_no_store)
        return app

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
        """The report, with the status token only."""
        if not self._token:
            raise web.HTTPNotFound
        if not self._authorized(request):
            return web.Response(status=401, headers={hdrs.WWW_AUTHENTICATE: "Bearer"})
        now = self.clock.now()
        try:
            body = report.build(self.store, self.settings, now, self.health())
        except StoreError:
            log.exception("/status: cannot read the state")
            return self._json({"error": "the state database cannot be read"}, status=503)
        return self._json(body)

    def _authorized(self, request: web.Request) -> bool:
        """Either credential matches the token (each compared in constant time)."""
        scheme, _, bearer = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        given = [request.query.get("token", "")]
        if scheme.lower() == "bearer":
            given.append(bearer.strip())
        ok = False
        for candidate in given:
            ok |= hmac.compare_digest(candidate.encode(), self._token)
        return ok

    # -- what leaves -------------------------------------------------------------------------

    def _reading(self) -> metrics.StateReading:
        return report.metrics_reading(self.store, self.settings, self.clock.now(), self.health())

    def _json(self, data: Any, *, status: int = 200) -> web.Response:
        body = self._clean(json.dumps(data).encode())
        return web.Response(body=body, status=status, content_type="application/json")

    def _clean(self, body: bytes) -> bytes:
        """Masked (every registered secret and the settings' own), feed ids shortened."""
        body = masking.mask_bytes(body, *self._secrets)
        for feed in self.settings.feeds:
            body = body.replace(feed.id.encode(), mask_id(feed.id).encode())
        return body


async def _no_store(_: web.Request, response: web.StreamResponse) -> None:
    response.headers[hdrs.CACHE_CONTROL] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
