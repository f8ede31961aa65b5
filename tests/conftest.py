"""Shared fixtures: a local SMTP server, a local json:// receiver, a temporary store.

Apprise sends from worker threads with blocking libraries, so both servers run in
threads of their own, each with its own event loop: they answer whatever the test's
event loop is doing, and sync tests can use them too.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from e2e_support import World

from alerter import masking
from alerter.clock import SystemClock
from alerter.sim import Simulator
from alerter.store import Store

# Apprise's email plugin imports the stdlib `imghdr`, deprecated since 3.11 (Apprise
# shims it on 3.13): import it once here, so `filterwarnings = error` does not turn
# Apprise's first plugin scan into a failure of whichever test happens to trigger it.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*imghdr", category=DeprecationWarning)
    import imghdr  # noqa: F401

# -- SMTP -----------------------------------------------------------------------------


class _FreePortController(Controller):  # type: ignore[misc]
    """aiosmtpd's controller on port 0: learns the port the OS chose before probing it."""

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class SmtpServer:
    """A local SMTP server (no TLS, no auth) that keeps every message it receives."""

    host: str
    port: int
    messages: list[EmailMessage]
    envelopes: list[tuple[str, list[str]]]  # (MAIL FROM, RCPT TO)

    def url(self, sender: str = "a@x.org", to: str = "b@y.org") -> str:
        """An Apprise mailto:// URL that delivers here."""
        return f"mailto://{self.host}:{self.port}?from={sender}&to={to}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd's hook: keep the message."""
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """An SMTP server on a free loopback port for the test's duration."""
    server = SmtpServer("127.0.0.1", 0, [], [])
    controller = _FreePortController(server, hostname=server.host, port=0)
    controller.start()
    server.port = controller.port
    try:
        yield server
    finally:
        controller.stop()


# -- json:// receiver -------------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    json: dict[str, Any]
    status: int  # what it was answered


class JsonReceiver:
    """A local HTTP server for Apprise's json:// targets.

    Records every POST, whatever it answers; answers 200 unless told otherwise per path
    (`fail("/b")` until `recover("/b")`), so one receiver stands for several targets.
    """

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.statuses: dict[str, int] = {}
        self.held: set[str] = set()
        self.refusals: dict[str, tuple[str, int]] = {}
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, name="json-receiver", daemon=True)

    def url(self, path: str = "/hook", query: str = "") -> str:
        """An Apprise json:// URL that posts to `path` here."""
        return f"json://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")

    def fail(self, path: str, status: int = 500) -> None:
        """Answer `status` to POSTs on `path` from now on."""
        self.statuses[path] = status

    def recover(self, path: str) -> None:
        """Answer 200 on `path` again."""
        self.statuses.pop(path, None)

    def refuse(self, path: str, containing: str, status: int = 400) -> None:
        """Answer `status` to POSTs on `path` whose title holds `containing`, for ever
        (as a chat API refuses one message it cannot take, and takes the others)."""
        self.refusals[path] = (containing, status)

    def hold(self, path: str) -> None:
        """Receive POSTs on `path` but never answer them (a send left in flight)."""
        self.held.add(path)

    def release(self, path: str) -> None:
        """Answer POSTs on `path` again."""
        self.held.discard(path)

    def received(self, path: str) -> list[dict[str, Any]]:
        """The JSON bodies posted to `path`, in order, failed ones included."""
        return [p.json for p in self.posts if p.path == path]

    def accepted(self, path: str) -> list[dict[str, Any]]:
        """The bodies posted to `path` that were answered 2xx (the ones a person would see)."""
        return [p.json for p in self.posts if p.path == path and 200 <= p.status < 300]

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path in self.held:
            # Recorded as unanswered (status 0); the sender waits until it gives up or dies.
            self.posts.append(Post(request.path, dict(request.headers), await request.json(), 0))
            await asyncio.sleep(3600)
        body = await request.json()
        status = self.statuses.get(request.path, 200)
        refused = self.refusals.get(request.path)
        if refused is not None and refused[0] in str(body.get("title", "")):
            status = refused[1]
        self.posts.append(Post(request.path, dict(request.headers), body, status))
        return web.Response(status=status, text="ok" if status < 300 else "refused")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        server = site._server  # aiohttp keeps the bound port only there
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> None:
        """Serve in a thread of its own."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the json receiver did not start")

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def json_receiver() -> Iterator[JsonReceiver]:
    """A json:// receiver on a free loopback port for the test's duration."""
    receiver = JsonReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


# -- the store -------------------------------------------------------------------------


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Where the test's SQLite state lives (reopen it to simulate a restart)."""
    return tmp_path / "state" / "alerter.db"


@pytest.fixture
def store(store_path: Path) -> Iterator[Store]:
    """A fresh, migrated store in a temporary directory."""
    s = Store.open(store_path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
async def world(
    tmp_path: Path, json_receiver: JsonReceiver, smtp_server: SmtpServer
) -> AsyncIterator[World]:
    sim = Simulator(SystemClock())
    await sim.start()
    w = World(tmp_path, sim, json_receiver, smtp_server)
    try:
        yield w
    finally:
        if w.service is not None:
            await w.service.stop()
        await sim.stop()


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> masking.Registry:
    """A fresh process-wide secret registry for each test: a secret one test registers
    (a CLI test's settings) must not mask another test's page or log."""
    fresh = masking.Registry()
    monkeypatch.setattr(masking, "REGISTRY", fresh)
    return fresh
