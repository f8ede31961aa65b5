"""The web server: /healthz, /metrics and /status on a real loopback port, a real store.

The counters are driven through the real code paths (a Watcher with a scripted feed
source, a Processor, a Sender with a scripted notifier) and read back the way Prometheus
reads them (`text_string_to_metric_families`); counters are process-wide, so each test
compares what it scraped before and after. Last, the whole service (`alerter run`) with
its web server on, against the simulator.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from e2e_support import World, until
from prometheus_client.parser import text_string_to_metric_families

import alerter.service
from alerter import masking
from alerter.clock import FakeClock, ScaledClock
from alerter.config import Config, load_config
from alerter.errors import ConfigError, FeedBlocked, FeedConfigFault, FeedError, FeedUnavailable
from alerter.models import (
    EngineEvent,
    FeedErrorKind,
    FeedPage,
    FeedStatus,
    HeldBack,
    Incident,
    IncidentState,
    Message,
    Outgoing,
    Reason,
    Rendered,
    Severity,
    TargetHealth,
)
from alerter.notify import SendResult, Target, Targets, load_targets
from alerter.outbox import Sender
from alerter.process import Processor
from alerter.rules.loader import load_rules
from alerter.service import Service
from alerter.settings import FeedConfig, Settings, load_settings, mask_id
from alerter.sim import Simulator
from alerter.store import Store
from alerter.vitals import Health, Vitals, verdict
from alerter.watch import Watcher
from alerter.web import WebServer, parse_listen

T0 = 1_800_000_000.0
FEED_ID = "0onlWEBtestFEEDid00000000000042"
PASSWORD = "pw-Xq7Zr2Lk9Vb4"
TOKEN = "tok-9f8e7d6c5b4a3928"
APPRISE_SECRET = "Ap9Wz3Qm8Rt6Yx"
FEED_NAME = "WebClub"  # the feed's label in the metrics: unique to this file

HELP_RULE = """
    rules:
      - name: help
        when: {type: [HELP]}
        notify: [rescue]
        severity: critical
"""


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ALERTER_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _fresh_masking(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing registered: the web server must mask the settings' secrets by itself."""
    monkeypatch.setattr(masking, "REGISTRY", masking.Registry())


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "feeds": [FeedConfig(id=FEED_ID, password=PASSWORD, name=FEED_NAME)],
        "state_dir": tmp_path,
        "rules": tmp_path / "rules.yml",
        "apprise_config": tmp_path / "apprise.txt",
        "http_listen": "127.0.0.1:0",
        "status_token": TOKEN,
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@dataclass
class Verdict:
    """The injected health callable: the real verdict over vitals the test sets."""

    clock: FakeClock
    vitals: Vitals = field(default_factory=lambda: Vitals(started_at=T0, last_cycle=T0))

    def __call__(self) -> Health:
        return verdict(self.vitals, self.clock.now(), interval=150.0, stuck_after=900.0)


@pytest.fixture
def health(clock: FakeClock) -> Verdict:
    return Verdict(clock)


@dataclass
class Client:
    session: aiohttp.ClientSession
    base: str

    async def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        async with self.session.get(self.base + path, headers=headers) as r:
            return r.status, dict(r.headers), await r.text()

    async def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        status, _, text = await self.get("/metrics")
        assert status == 200
        return samples(text)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample as Prometheus parses it: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def delta(
    before: dict[tuple[str, frozenset[tuple[str, str]]], float],
    after: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    key: str,
) -> Counter[str]:
    """How much each `key` label's series of `name` grew (summing the other labels)."""
    grown: Counter[str] = Counter()
    for (n, labels), value in after.items():
        if n == name:
            grown[dict(labels)[key]] += value - before.get((n, labels), 0.0)
    return Counter({k: v for k, v in grown.items() if v})


@pytest.fixture
async def served(
    settings: Settings, store: Store, clock: FakeClock, health: Verdict
) -> AsyncIterator[tuple[WebServer, Client]]:
    server = WebServer(settings, store, clock, health)
    async with server.serving(), aiohttp.ClientSession() as session:
        assert server.url is not None
        yield server, Client(session, server.url)


# -- listen -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8787", ("127.0.0.1", 8787)),
        ("[::1]:8787", ("::1", 8787)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("localhost:0", ("localhost", 0)),
        ("", None),
        ("  ", None),
    ],
)
def test_listen_addresses(value: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    "value", ["8787", "localhost", ":8787", "::1:8787", "[::1]8787", "[::1]:", "h:99999", "h:x"]
)
def test_a_bad_listen_address_is_a_configuration_problem(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_listen(value)
    assert "ALERTER_HTTP_LISTEN" in str(err.value)


async def test_an_empty_listen_address_serves_nothing(
    tmp_path: Path, store: Store, clock: FakeClock, health: Verdict
) -> None:
    server = WebServer(make_settings(tmp_path, http_listen=""), store, clock, health)
    async with server.serving():
        assert server.url is None


async def test_a_port_in_use_is_logged_and_the_service_goes_on(
    tmp_path: Path,
    store: Store,
    clock: FakeClock,
    health: Verdict,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = WebServer(
            make_settings(tmp_path, http_listen=f"127.0.0.1:{port}"), store, clock, health
        )
        assert await server.start() is False
        await server.stop()
    assert "cannot listen on 127.0.0.1:" in caplog.text


async def test_an_ipv6_loopback_address_is_served(
    tmp_path: Path, store: Store, clock: FakeClock, health: Verdict
) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = WebServer(make_settings(tmp_path, http_listen="[::1]:0"), store, clock, health)
    async with server.serving(), aiohttp.ClientSession() as session:
        assert server.url is not None
        assert server.url.startswith("http://[::1]:")
        async with session.get(server.url + "/healthz") as r:
            assert r.status == 200


# -- /healthz ---------------------------------------------------------------------------------


async def test_healthz_says_the_services_verdict_200_then_503_with_the_reasons(
    served: tuple[WebServer, Client], clock: FakeClock, health: Verdict
) -> None:
    _, client = served
    status, headers, body = await client.get("/healthz")
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {
        "status": "ok", "blind": False, "reasons": [], "checked_at": "2027-01-15T08:00:00Z",
    }  # fmt: skip

    clock.advance(600)  # the processing loop has not cycled for 10 min: it stalled
    status, _, body = await client.get("/healthz")
    assert status == 503
    answer = json.loads(body)
    assert answer["status"] == "unhealthy"
    assert answer["blind"] is False
    assert answer["reasons"] == ["the processing loop has not run for 600s"]

    health.vitals.store_error = "disk I/O error"  # and now the state cannot be written
    status, _, body = await client.get("/healthz")
    assert status == 503
    answer = json.loads(body)
    assert answer["blind"] is True
    assert "the state cannot be written: disk I/O error" in answer["reasons"]

    health.vitals.store_error = None
    health.vitals.cycled(clock.now())
    status, _, _ = await client.get("/healthz")
    assert status == 200


async def test_unknown_paths_and_methods_are_refused_and_nothing_is_cached(
    served: tuple[WebServer, Client],
) -> None:
    _, client = served
    for path in ("/", "/nope", "/status/x", "/healthz/", "/metrics.txt"):
        status, headers, _ = await client.get(path)
        assert status == 404, path
        assert headers["Cache-Control"] == "no-store"
    async with client.session.post(client.base + "/healthz") as r:
        assert r.status == 405
        assert r.headers["Cache-Control"] == "no-store"
    for path in ("/healthz", "/metrics", f"/status?token={TOKEN}"):
        _, headers, _ = await client.get(path)
        assert headers["Cache-Control"] == "no-store", path


# -- /metrics ---------------------------------------------------------------------------------


class ScriptedSource:
    """A FeedSource answering from a script (a page, or a FeedError); stops the watcher
    once the script is spent."""

    def __init__(self, script: list[FeedPage | FeedError], stop: asyncio.Event) -> None:
        self.script = list(script)
        self.stop = stop

    async def fetch(
        self, feed: FeedConfig, endpoint: str = "message", *, start: int | None = None
    ) -> FeedPage:
        item = self.script.pop(0)
        if not self.script:
            self.stop.set()
        if isinstance(item, FeedError):
            raise item
        return item


@dataclass
class ScriptedNotifier:
    """Accepts, except for the targets that are `down`."""

    down: set[str] = field(default_factory=set)

    async def send(self, target: Target, title: str, body: str, severity: Severity) -> SendResult:
        return SendResult(False, "HTTP 500") if target.id in self.down else SendResult(True)


def msg(id_: int, type_: str = "TRACK") -> Message:
    return Message(id_, "0-42", "Anna", int(T0) - 600 + id_, type_, 46.5, 7.9, battery="GOOD")


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


async def test_metrics_count_what_the_watcher_processor_and_sender_did(
    tmp_path: Path, settings: Settings, store: Store, clock: FakeClock, health: Verdict,
    served: tuple[WebServer, Client],
) -> None:  # fmt: skip
    _, client = served
    before = await client.scrape()

    # 1. Six requests to SPOT with known outcomes.
    stop = asyncio.Event()
    source = ScriptedSource(
        [
            FeedPage((msg(1), msg(2, "HELP"), msg(3))),
            FeedPage(),
            FeedUnavailable("HTTP 500"),
            FeedPage((msg(3), msg(4, "HELP"))),  # one known, one new
            FeedBlocked("HTTP 403: SPOT blocked this IP or feed"),
            FeedConfigFault("E-0160", "Feed Not Found"),
        ],
        stop,
    )
    watcher = Watcher(settings, source, store, clock)
    await asyncio.wait_for(watcher.run(stop), 10)

    # 2. The processor decides on the four stored messages.
    apprise = write(
        tmp_path / "apprise.txt",
        f"rescue=json://user:{APPRISE_SECRET}@127.0.0.1:9/ok\n"
        "rescue, sms=json://127.0.0.1:9/down\n",
    )
    targets = load_targets(apprise)
    ok, down = targets.targets
    cfg = Config(load_rules(write(tmp_path / "rules.yml", HELP_RULE), known_tags=None), targets)
    Processor(settings, cfg, store, clock).process()

    # 3. The sender: one target takes it, one fails; then the failing one leaves the
    # config and what waited for it is dropped.
    sender = Sender(store, targets, ScriptedNotifier(down={down.id}), clock, lambda n, e: None)
    await sender.deliver_due()
    sender.use(Targets((ok,)))
    await sender.deliver_due()

    health.vitals.cycled(clock.now())  # the fake clock moved hours through the backoffs
    after = await client.scrape()
    requests = {
        outcome: after.get(
            ("alerter_spot_requests_total", frozenset({("feed", FEED_NAME), ("outcome", outcome)})),
            0.0,
        ) - before.get(
            ("alerter_spot_requests_total", frozenset({("feed", FEED_NAME), ("outcome", outcome)})),
            0.0,
        )
        for outcome in ("data", "empty", "unavailable", "blocked", "config")
    }  # fmt: skip
    assert requests == {"data": 2, "empty": 1, "unavailable": 1, "blocked": 1, "config": 1}
    assert delta(before, after, "alerter_spot_request_duration_seconds_count", "feed") == {
        FEED_NAME: 6
    }
    assert delta(before, after, "alerter_messages_stored_total", "feed") == {FEED_NAME: 4}

    # Decisions: exactly what the incidents' history says was decided.
    history = Counter(
        f"{e.reason.value}/{str(e.notified).lower()}/"
        + ("" if e.notified else e.held_back.name.lower() if e.held_back else "recorded")
        for i in store.incidents()
        for e in store.history(i.id or 0)
    )
    decided: Counter[str] = Counter()
    for (name, labels), value in after.items():
        if name == "alerter_decisions_total":
            lb = dict(labels)
            grown = value - before.get((name, labels), 0.0)
            if grown:
                decided[f"{lb['reason']}/{lb['notified']}/{lb['held_back']}"] += int(grown)
    assert decided == history
    assert decided["opened/true/"] == 1

    notified: Counter[str] = Counter()
    for (name, labels), value in after.items():
        if name == "alerter_notifications_total":
            lb = dict(labels)
            grown = value - before.get((name, labels), 0.0)
            if grown:
                notified[f"{lb['tag']}/{lb['outcome']}"] += int(grown)
    assert notified == {"rescue/sent": 1, "rescue,sms/failed": 1, "none/dropped": 1}

    # Read from the state at scrape time.
    assert after[("alerter_incidents_open", frozenset({("rule", "help")}))] == 1
    assert after[("alerter_outbox_pending", frozenset())] == 0
    assert after[("alerter_outbox_oldest_pending_age_seconds", frozenset())] == 0
    assert after[("alerter_target_failing", frozenset({("target", down.label)}))] == 1
    assert after[("alerter_state_readable", frozenset())] == 1
    assert after[("alerter_healthy", frozenset())] == 1
    silence = after[("alerter_feed_last_success_age_seconds", frozenset({("feed", FEED_NAME)}))]
    [state] = store.feed_states().values()
    assert state.last_success is not None
    assert silence == pytest.approx(clock.now() - state.last_success)


async def test_metrics_show_the_outbox_waiting_and_the_verdict(
    store: Store, clock: FakeClock, health: Verdict, served: tuple[WebServer, Client]
) -> None:
    _, client = served
    store.ensure_feed(FEED_ID, T0 - 100)  # watched, never answered
    store.enqueue(
        [Outgoing(Rendered("Feed failing: x", "b", "s", Severity.WARNING), "Feed failing",
                  (("t1", "json://a", False),))],
        T0 - 30,
    )  # fmt: skip
    health.vitals.oldest_pending = T0 - 30  # as the processor reports it
    clock.advance(1000)  # and the loop has stalled

    got = await client.scrape()

    assert got[("alerter_outbox_pending", frozenset())] == 1
    assert got[("alerter_outbox_oldest_pending_age_seconds", frozenset())] == 1030
    assert got[("alerter_feed_last_success_age_seconds", frozenset({("feed", FEED_NAME)}))] == 1100
    assert got[("alerter_healthy", frozenset())] == 0
    assert got[("alerter_blind", frozenset())] == 1  # stuck 1030 s > 900 s


async def test_metrics_answer_when_the_state_cannot_be_read(
    store: Store, served: tuple[WebServer, Client], caplog: pytest.LogCaptureFixture
) -> None:
    _, client = served
    store.conn.execute("DROP TABLE targets")

    got = await client.scrape()

    assert got[("alerter_state_readable", frozenset())] == 0
    assert "metrics: cannot read the state" in caplog.text


# -- /status ----------------------------------------------------------------------------------


def state_with_an_open_help(store: Store) -> None:
    store.ensure_feed(FEED_ID, T0 - 3600)
    store.record_request(FEED_ID, T0 - 60)
    store.record_success(FEED_ID, T0 - 60, "SPOT's name")
    store.insert_messages(FEED_ID, [msg(1), msg(2, "HELP")], T0 - 60, initial=False)
    # An error as an older version stored it: with the password and the feed id in clear.
    store.record_failure(
        FEED_ID, T0 - 10, FeedErrorKind.UNAVAILABLE,
        f"HTTP 500 for /feed/{FEED_ID}/message.xml?feedPassword={PASSWORD}", None,
    )  # fmt: skip
    inc = Incident(
        "0-42", "help", IncidentState.OPEN, T0 - 598, T0 - 60, T0 - 598, 2, 2, T0 - 60, id=1
    )
    store.commit_evaluation(
        processed=[1, 2], incidents=[inc],
        events=[EngineEvent(1, T0 - 60, Reason.OPENED, 2, True),
                EngineEvent(1, T0 - 30, Reason.UPDATED, 2, False, HeldBack.UPDATE_TOO_SOON)],
        outgoing=[], at=T0 - 60,
    )  # fmt: skip
    store.set_target_health(
        TargetHealth("t1", f"json://user:{'*' * 3}@127.0.0.1/x", 3, T0 - 100, told=True)
    )


async def test_status_needs_the_token(store: Store, served: tuple[WebServer, Client]) -> None:
    state_with_an_open_help(store)
    _, client = served
    refused = [
        await client.get("/status"),
        await client.get("/status?token=wrong"),
        await client.get(f"/status?token={TOKEN[:-1]}"),
        await client.get("/status?token="),
        await client.get("/status", {"Authorization": "Bearer wrong"}),
        await client.get("/status", {"Authorization": f"Basic {TOKEN}"}),
        await client.get("/status", {"Authorization": TOKEN}),
    ]
    for status, headers, body in refused:
        assert status == 401
        assert body == ""
        assert headers["Cache-Control"] == "no-store"

    for status, _, body in (
        await client.get(f"/status?token={TOKEN}"),
        await client.get("/status", {"Authorization": f"Bearer {TOKEN}"}),
        await client.get("/status", {"Authorization": f"bearer {TOKEN}"}),
    ):
        assert status == 200
        answer = json.loads(body)
        [incident] = answer["incidents"]
        assert (incident["id"], incident["rule"], incident["state"]) == (1, "help", "open")
        assert incident["device"] == {"name": "Anna", "id": "0-42"}
        assert [e["held_back"] for e in incident["events"]] == [
            None, "a repeat within the rule's `updates` of the previous notification",
        ]  # fmt: skip
        [feed] = answer["feeds"]
        assert (feed["name"], feed["failures"]) == (FEED_NAME, 1)
        [device] = answer["devices"]
        assert device["last_message"]["type"] == "HELP"
        assert device["last_message"]["position"]["latitude"] == 46.5
        assert answer["health"]["status"] == "ok"
        assert answer["health"]["judged_by"] == "service"
        assert "incident #1 help for Anna is open" in answer["needs_admin"]


async def test_status_is_not_there_without_a_configured_token(
    tmp_path: Path, store: Store, clock: FakeClock, health: Verdict
) -> None:
    server = WebServer(make_settings(tmp_path, status_token=None), store, clock, health)
    async with server.serving(), aiohttp.ClientSession() as session:
        for query in ("", "?token=", f"?token={TOKEN}"):
            async with session.get(f"{server.url}/status{query}") as r:
                assert r.status == 404
                assert TOKEN not in await r.text()


async def test_no_response_ever_holds_a_secret(
    tmp_path: Path, store: Store, clock: FakeClock, health: Verdict,
    served: tuple[WebServer, Client],
) -> None:  # fmt: skip
    _, client = served
    state_with_an_open_help(store)
    load_targets(write(tmp_path / "apprise.txt", f"rescue=json://u:{APPRISE_SECRET}@h/x\n"))
    health.vitals.store_error = f"cannot write {PASSWORD}"  # a reason quoting a secret
    health.vitals.feeds = {FEED_NAME: FeedStatus.FAILING}

    texts = []
    for path, headers in [
        ("/healthz", None), ("/metrics", None), ("/status", None), ("/status?token=x", None),
        (f"/status?token={TOKEN}", None), ("/status", {"Authorization": f"Bearer {TOKEN}"}),
        ("/nope", None), (f"/nope?token={TOKEN}", None),
    ]:  # fmt: skip
        status, got_headers, body = await client.get(path, headers)
        texts.append(f"{status} {got_headers} {body}")
    everything = "\n".join(texts)

    assert "HTTP 500 for" in everything  # the stored error is shown, masked
    assert mask_id(FEED_ID) in everything
    for secret in (FEED_ID, PASSWORD, APPRISE_SECRET, TOKEN):
        assert secret not in everything, secret
        assert secret[:8] not in everything, secret


# -- the whole service ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _service_starts_the_web_server() -> bool:
    return "WebServer" in Path(alerter.service.__file__).read_text(encoding="utf-8")


@pytest.mark.skipif(
    not _service_starts_the_web_server(), reason="service.py does not start the web server yet"
)
async def test_the_running_service_answers_healthz_metrics_and_status(world: World) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = await world.start(ALERTER_HTTP_LISTEN=f"127.0.0.1:{port}", ALERTER_STATUS_TOKEN=TOKEN)
    await world.next_polls(2)
    world.alice.send("HELP", world.now(), 46.55, 7.98)
    await until(lambda: "HELP" in world.got("/rescue"), what="the HELP alert")

    async with aiohttp.ClientSession() as session:

        async def get(path: str, **kw: Any) -> tuple[int, str]:
            async with session.get(base + path, **kw) as r:
                assert r.headers["Cache-Control"] == "no-store"
                return r.status, await r.text()

        status, body = await get("/healthz")
        assert (status, json.loads(body)["status"]) == (200, "ok")

        async def metrics_show_it() -> bool:
            _, text = await get("/metrics")
            got = samples(text)
            opened = got.get(
                ("alerter_decisions_total",
                 frozenset({("reason", "opened"), ("notified", "true"), ("held_back", "")})),
                0,
            )  # fmt: skip
            sent = got.get(
                ("alerter_notifications_total",
                 frozenset({("tag", "rescue"), ("outcome", "sent")})),
                0,
            )  # fmt: skip
            return opened >= 1 and sent >= 1

        await until_async(metrics_show_it, what="the HELP decision and its sending in /metrics")

        status, body = await get("/status")
        assert status == 401
        status, body = await get("/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        answer = json.loads(body)
        [incident] = answer["incidents"]
        assert (incident["rule"], incident["device"]["name"]) == ("help", "Alice")
        everything = body + (await get("/metrics"))[1]
        for secret in (world.feed.id, world.feed.password or "", TOKEN):
            assert secret not in everything
    assert "Traceback" not in service.log()


async def until_async(cond: Callable[[], Any], within: float = 20.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


# -- the whole service, its loop stalled on purpose -------------------------------------------


async def test_healthz_turns_503_when_the_loop_stalls_and_200_when_it_runs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unused_tcp_port: int
) -> None:
    """The real Service (in this process, on a clock 100x faster) against the simulator:
    every processing cycle is made to fail, so the loop stops completing cycles."""
    clock = ScaledClock(100.0)
    sim = Simulator(clock)
    sim.add_feed("0STALLFEED00000000000000001", "Club").add_device("0-1", "Anna")
    base = await sim.start()
    (tmp_path / "rules.yml").write_text(
        "rules:\n  - name: help\n    when: {type: [HELP]}\n    notify: [rescue]\n"
        "    severity: critical\n"
    )
    (tmp_path / "apprise.yml").write_text("rescue=json://127.0.0.1:9/x\n")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        feeds=[FeedConfig(id="0STALLFEED00000000000000001")],
        spot_base_url=base, rules=tmp_path / "rules.yml",
        apprise_config=tmp_path / "apprise.yml", state_dir=tmp_path / "state",
        http_listen=f"127.0.0.1:{unused_tcp_port}",
    )  # fmt: skip
    store = Store.open(settings.database)
    service = Service(settings, load_config(settings), store, clock=clock)
    task = asyncio.create_task(service.run(handle_signals=False))
    url = f"http://127.0.0.1:{unused_tcp_port}/healthz"

    async def healthz() -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            return resp.status, await resp.json()

    async def until_status(code: int) -> dict[str, Any]:
        for _ in range(400):
            try:
                status, body = await healthz()
            except aiohttp.ClientConnectionError:
                status, body = 0, {}
            if status == code:
                return body
            await asyncio.sleep(0.05)
        raise AssertionError(f"/healthz never answered {code}")

    real = Processor.process
    try:
        await until_status(200)

        def stalled(self: Processor) -> Any:
            raise RuntimeError("injected: the cycle never completes")

        monkeypatch.setattr(Processor, "process", stalled)
        body = await until_status(503)  # after two intervals' worth of failed cycles
        assert body["status"] == "unhealthy"
        assert any("has not run for" in r for r in body["reasons"])

        monkeypatch.setattr(Processor, "process", real)
        body = await until_status(200)
        assert body["reasons"] == []
    finally:
        service.stop()
        await task
        await sim.stop()
        store.close()
