"""The pages: /ack/{token} (the acknowledgement page) and the /status board, in process.

The server is the real `WebServer` on a loopback port with a real store; the incidents
behind acknowledgement tokens come from a fake `AckDesk` that records every call, so a
test can say that a GET never acknowledged. The board reads the store, as in the service.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from alerter import masking
from alerter.ack import clean_name
from alerter.clock import FakeClock
from alerter.models import (
    EngineEvent,
    HeldBack,
    Incident,
    IncidentState,
    Message,
    Outgoing,
    Reason,
    Rendered,
    Severity,
)
from alerter.settings import FeedConfig, Settings, load_settings
from alerter.store import Store
from alerter.vitals import Health, Vitals, verdict
from alerter.web import WebServer
from alerter.web.ack import (
    PROOF_TTL,
    AckResult,
    FormProof,
    IncidentView,
    Position,
    TakeStatus,
    Told,
)
from alerter.web.guard import RateLimiter

T0 = 1_800_000_000.0
FEED_ID = "0onlPAGEStestFEEDid0000000042"
PASSWORD = "pw-Pg7Zr2Lk9Vb4"
STATUS_TOKEN = "stk-7c6b5a4d3e2f1098"
SECRET_KEY = "sk-0a1b2c3d4e5f6a7b8c9d"
ACK_TOKEN = "v1.1.rescue.Q2hlY2tlZEJ5VGhlRmFrZURlc2s"  # what the fake desk knows
RESOLVED_TOKEN = "v1.2.rescue.UmVzb2x2ZWRJbmNpZGVudA"
SCRIPT = "<script>alert(1)</script>"
ESCAPED = html.escape(SCRIPT)
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ALERTER_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _fresh_masking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(masking, "REGISTRY", masking.Registry())


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "feeds": [FeedConfig(id=FEED_ID, password=PASSWORD, name="Club")],
        "state_dir": tmp_path,
        "rules": tmp_path / "rules.yml",
        "apprise_config": tmp_path / "apprise.txt",
        "http_listen": "127.0.0.1:0",
        "status_token": STATUS_TOKEN,
        "secret_key": SECRET_KEY,
        "timezone": "Europe/Zurich",
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


@dataclass
class FakeDesk:
    """An AckDesk over fixed views: records every call; `take` acknowledges once, and
    (when given a store) writes the acknowledgement there so the board sees it too."""

    clock: FakeClock
    views: dict[str, IncidentView] = field(default_factory=dict)
    store: Store | None = None
    calls: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def takes(self) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[0] == "take"]

    def view(self, token: str) -> IncidentView | None:
        self.calls.append(("view", token))
        v = self.views.get(token)
        return None if v is None or v.state is IncidentState.RESOLVED else v

    def take(self, token: str, name: str) -> AckResult:
        self.calls.append(("take", token, name))
        v = self.view(token)
        if v is None:
            return AckResult(TakeStatus.NOT_OPEN)
        if v.taken_by is not None:
            return AckResult(TakeStatus.ALREADY, v.taken_by, v.taken_at)
        now = self.clock.now()
        self.views[token] = replace(
            v, state=IncidentState.ACKNOWLEDGED, taken_by=name, taken_at=now
        )
        if self.store is not None:
            mark_acknowledged(self.store, v.incident_id, name, now)
        return AckResult(TakeStatus.TAKEN, name, now)


def mark_acknowledged(store: Store, incident_id: int, name: str, at: float) -> None:
    """The store's incident as `Processor.acknowledge` leaves it (for the board)."""
    columns = {r["name"] for r in store._query("PRAGMA table_info(incidents)")}
    with store.transaction() as c:
        c.execute("UPDATE incidents SET state = 'acknowledged' WHERE id = ?", (incident_id,))
        if "acknowledged_by" in columns:
            c.execute(
                "UPDATE incidents SET acknowledged_by = ?, acknowledged_at = ? WHERE id = ?",
                (name, at, incident_id),
            )


def help_view(who: str = "Alice", text: str | None = "Broken leg, need help") -> IncidentView:
    return IncidentView(
        incident_id=1,
        who=who,
        what="HELP",
        since=T0 - 420,
        state=IncidentState.OPEN,
        feed="Club",
        positions=(
            Position(T0 - 120, None, None, "HELP"),
            Position(T0 - 420, 46.55, 7.98, "HELP"),
            Position(T0 - 1020, 46.54321, 7.97654, "TRACK"),
        ),
        told=(
            Told(T0 - 400, "rescue", "HELP"),
            Told(T0 - 400, "rescue-backup", "HELP", delivered=False),
        ),
        text=text,
        battery="LOW",
    )


def state_with_an_open_help(
    store: Store, who: str = "Alice", text: str | None = "Broken leg, need help"
) -> None:
    """The store as the service leaves it after a HELP: the message, the device, the
    incident with its history, the HELP alert sent to one target and failing for another;
    and Bob's earlier Silent, resolved an hour ago."""
    store.ensure_feed(FEED_ID, T0 - 3600)
    store.record_request(FEED_ID, T0 - 60)
    store.record_success(FEED_ID, T0 - 60, "SPOT's name")
    store.insert_messages(
        FEED_ID,
        [
            Message(1, "0-1", who, int(T0) - 1020, "TRACK", 46.54321, 7.97654, battery="GOOD"),
            Message(2, "0-1", who, int(T0) - 420, "HELP", 46.55, 7.98, battery="LOW",
                    content=text),
            Message(3, "0-2", "Bob", int(T0) - 7200, "TRACK", 46.1, 8.2, battery="GOOD"),
        ],
        T0 - 400,
        initial=False,
    )  # fmt: skip
    help_ = Incident("0-1", "help", IncidentState.OPEN, T0 - 420, T0 - 400, T0 - 420, 2, 2,
                     T0 - 400, id=1)  # fmt: skip
    silent = Incident("0-2", "stale-track", IncidentState.RESOLVED, T0 - 7000, T0 - 6900,
                      T0 - 7000, 3, 3, T0 - 6900, resolved_at=T0 - 3600, id=2)  # fmt: skip
    alert = Outgoing(
        Rendered(f"HELP: {who} (Club)", "body", "short", Severity.CRITICAL),
        "opened",
        (("t1", "json://127.0.0.1/rescue", False), ("t2", "json://127.0.0.1/backup", False)),
        incident_id=1,
    )
    store.commit_evaluation(
        processed=[1, 2, 3], incidents=[help_, silent],
        events=[EngineEvent(1, T0 - 400, Reason.OPENED, 2, True),
                EngineEvent(1, T0 - 200, Reason.UPDATED, 2, False, HeldBack.UPDATE_TOO_SOON),
                EngineEvent(2, T0 - 6900, Reason.OPENED, 3, True),
                EngineEvent(2, T0 - 3600, Reason.RESOLVED, None, True)],
        outgoing=[alert], at=T0 - 400,
    )  # fmt: skip
    first, second = store.pending_deliveries()
    store.mark_sent(first.id, T0 - 399)
    store.mark_failed(second.id, "HTTP 500", T0 + 60)


@dataclass
class Verdict:
    clock: FakeClock

    def __call__(self) -> Health:
        vitals = Vitals(started_at=T0 - 3600, last_cycle=self.clock.now())
        return verdict(vitals, self.clock.now(), interval=150.0, stuck_after=900.0)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str
    cookies: dict[str, str]


@dataclass
class Client:
    session: aiohttp.ClientSession
    base: str
    seen: list[str] = field(default_factory=list)  # every answer, for the secrets test

    async def request(self, method: str, path: str, **kw: Any) -> Answer:
        kw.setdefault("allow_redirects", False)
        async with self.session.request(method, self.base + path, **kw) as r:
            body = (await r.read()).decode("utf-8", "replace")
            headers = dict(r.headers.items())
            cookies = {k: v.value for k, v in r.cookies.items()}
            set_cookies = r.headers.getall("Set-Cookie", [])
        self.seen.append(f"{r.status} {headers} {set_cookies} {body}")
        return Answer(r.status, headers, body, cookies)

    async def get(self, path: str, **kw: Any) -> Answer:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, data: dict[str, str] | None = None, **kw: Any) -> Answer:
        return await self.request("POST", path, data=data or {}, **kw)

    async def page(self, path: str, **kw: Any) -> Answer:
        """As a browser asks (Accept prefers text/html)."""
        headers = {"Accept": BROWSER, **kw.pop("headers", {})}
        return await self.get(path, headers=headers, **kw)


@dataclass
class Site:
    server: WebServer
    client: Client
    desk: FakeDesk
    store: Store
    clock: FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def site(tmp_path: Path, store: Store, clock: FakeClock) -> AsyncIterator[Site]:
    state_with_an_open_help(store)
    desk = FakeDesk(clock, {ACK_TOKEN: help_view(),
                            RESOLVED_TOKEN: replace(help_view("Bob"), incident_id=2,
                                                    state=IncidentState.RESOLVED)},
                    store)  # fmt: skip
    server = WebServer(make_settings(tmp_path), store, clock, Verdict(clock), ack_desk=desk)
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1 too
    async with server.serving(), aiohttp.ClientSession(cookie_jar=jar) as session:
        assert server.url is not None
        yield Site(server, Client(session, server.url), desk, store, clock)


def proof_in(body: str) -> str:
    found = re.search(r'name="proof" value="([^"]+)"', body)
    assert found, "the page has no form"
    return html.unescape(found.group(1))


def text_of(body: str) -> str:
    """The page's visible text, roughly (tags out, entities read, spaces squeezed)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


# -- the acknowledgement page -----------------------------------------------------------------


async def test_a_get_shows_the_incident_and_the_form_and_never_acknowledges(site: Site) -> None:
    c = site.client
    for _ in range(3):  # a chat app's preview, a mail scanner, the person
        page = await c.get(f"/ack/{ACK_TOKEN}")
        assert page.status == 200
    head = await c.request("HEAD", f"/ack/{ACK_TOKEN}")
    assert head.status == 200
    assert site.desk.takes == []

    text = text_of(page.body)
    assert "HELP: Alice" in text
    assert "Alice (Club)" in text
    assert "Broken leg, need help" in text
    assert "Battery LOW" in text
    # Since when, in UTC and the admins' zone, with how long ago.
    assert "Since 07:53 UTC (08:53 CET), 15 Jan 2027, 7 min ago" in text
    # Where: the last fix (the latest HELP had none), with a map link.
    assert "46.55000, 7.98000" in text
    assert "The latest message (07:58 UTC (08:58 CET), 15 Jan 2027, 2 min ago) had no GPS" in text
    osm = "https://www.openstreetmap.org/?mlat=46.55000&amp;mlon=7.98000#map=14/46.55000/7.98000"
    assert f'href="{osm}"' in page.body
    # The last positions, and who was told when.
    assert "46.54321, 7.97654" in text
    assert "07:53 UTC (08:53 CET), 6 min ago: HELP to rescue" in text
    assert "HELP to rescue-backup (not delivered yet)" in text
    # The form: a name and the proof; posted to this same address.
    assert '<form method="post" class="take">' in page.body
    assert 'name="name"' in page.body
    assert FormProof(b"x").check(ACK_TOKEN, proof_in(page.body), T0) is False  # not our key
    # A phone: the viewport, one column, the service's own stylesheet only.
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page.body
    assert "<script" not in page.body
    assert "style=" not in page.body

    h = page.headers
    assert h["Content-Type"] == "text/html; charset=utf-8"
    assert h["Cache-Control"] == "no-store"
    assert h["X-Frame-Options"] == "DENY"
    assert h["Referrer-Policy"] == "no-referrer"
    assert h["X-Content-Type-Options"] == "nosniff"
    csp = h["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "img-src 'self' data: https://tile.openstreetmap.org" in csp
    assert "unsafe-inline" not in csp


async def test_a_post_with_the_forms_proof_acknowledges_and_a_second_says_who_took_it(
    site: Site,
) -> None:
    c = site.client
    proof = proof_in((await c.get(f"/ack/{ACK_TOKEN}")).body)
    site.clock.advance(30)

    taken = await c.post(f"/ack/{ACK_TOKEN}", {"name": "  Dana\tRescuer\u200b ", "proof": proof})

    assert taken.status == 200
    assert "Taken by Dana Rescuer" in text_of(taken.body)
    assert site.desk.takes == [("take", ACK_TOKEN, "Dana Rescuer")]
    assert taken.headers["Cache-Control"] == "no-store"

    # Someone else who opened the page before, a minute later.
    site.clock.advance(60)
    again = await c.post(f"/ack/{ACK_TOKEN}", {"name": "Eve", "proof": proof})
    assert again.status == 200
    text = text_of(again.body)
    assert "Already taken by Dana Rescuer at 08:00 UTC (09:00 CET), 15 Jan 2027, 1 min ago" in text
    assert "Eve" not in text
    assert site.desk.views[ACK_TOKEN].taken_by == "Dana Rescuer"  # not changed by the second

    # The page now says who took it, and offers no form.
    page = await c.get(f"/ack/{ACK_TOKEN}")
    assert "Taken by Dana Rescuer" in text_of(page.body)
    assert "<form" not in page.body


async def test_a_post_without_the_right_proof_is_refused(site: Site) -> None:
    c = site.client
    site.server.ack.posts = RateLimiter(100)  # this test posts more than a person would
    good = proof_in((await c.get(f"/ack/{ACK_TOKEN}")).body)
    issued, _, mac = good.partition(".")
    other = FormProof(b"another key").issue(ACK_TOKEN, T0)
    for data in (
        {"name": "Mallory"},
        {"name": "Mallory", "proof": ""},
        {"name": "Mallory", "proof": "garbage"},
        {"name": "Mallory", "proof": f"{int(issued) + 1}.{mac}"},  # its time changed
        {"name": "Mallory", "proof": f"{issued}.{mac[:-1]}A"},
        {"name": "Mallory", "proof": other},
    ):
        refused = await c.post(f"/ack/{ACK_TOKEN}", data)
        assert refused.status == 403, data
        assert "This form was not accepted" in refused.body

    # The right proof, from a request that says it came from another site.
    for headers in (
        {"Origin": "https://evil.example"},
        {"Referer": "https://evil.example/page"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        refused = await c.post(f"/ack/{ACK_TOKEN}", {"name": "M", "proof": good}, headers=headers)
        assert refused.status == 403, headers

    # A proof served for another token does not fit this one.
    site.desk.views["v1.9.rescue.another"] = replace(help_view(), incident_id=9)
    other_page = await c.get("/ack/v1.9.rescue.another")
    refused = await c.post(f"/ack/{ACK_TOKEN}", {"name": "M", "proof": proof_in(other_page.body)})
    assert refused.status == 403

    # A form older than PROOF_TTL.
    site.clock.advance(PROOF_TTL + 1)
    refused = await c.post(f"/ack/{ACK_TOKEN}", {"name": "Dana", "proof": good})
    assert refused.status == 403
    assert site.desk.takes == []


async def test_a_post_from_the_page_itself_is_accepted(site: Site) -> None:
    """Under `Referrer-Policy: no-referrer` a browser sends `Origin: null` on our own form."""
    c = site.client
    proof = proof_in((await c.get(f"/ack/{ACK_TOKEN}")).body)
    taken = await c.post(
        f"/ack/{ACK_TOKEN}",
        {"name": "Dana", "proof": proof},
        headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
    )
    assert taken.status == 200
    assert site.desk.takes == [("take", ACK_TOKEN, "Dana")]


async def test_a_post_without_a_name_asks_for_one(site: Site) -> None:
    c = site.client
    proof = proof_in((await c.get(f"/ack/{ACK_TOKEN}")).body)
    for name in ("", "   ", "\u200b\u0007"):
        asked = await c.post(f"/ack/{ACK_TOKEN}", {"name": name, "proof": proof})
        assert asked.status == 422
        assert "Type your name." in asked.body
        assert 'name="proof"' in asked.body
    assert site.desk.takes == []


async def test_forged_altered_and_resolved_tokens_get_the_same_404_as_any_unknown_path(
    site: Site,
) -> None:
    c = site.client
    proof = proof_in((await c.get(f"/ack/{ACK_TOKEN}")).body)
    unknown = await c.get("/no/such/page")
    assert unknown.status == 404

    def same(a: Answer) -> tuple[int, dict[str, str], str]:
        return a.status, {k: v for k, v in a.headers.items() if k != "Date"}, a.body

    answers = [
        await c.get("/nope"),
        await c.get("/ack/v1.1.rescue.Zm9yZ2Vk"),  # forged
        await c.get(f"/ack/{ACK_TOKEN[:-1]}B"),  # altered
        await c.get(f"/ack/{ACK_TOKEN}x"),
        await c.get(f"/ack/{RESOLVED_TOKEN}"),  # its incident is resolved
        await c.get("/ack/"),
        await c.get("/static/nothing.js"),
        await c.post("/ack/v1.1.rescue.Zm9yZ2Vk", {"name": "M", "proof": proof}),
        await c.post(f"/ack/{ACK_TOKEN[:-1]}B", {"name": "M", "proof": proof}),
        await c.post(f"/ack/{RESOLVED_TOKEN}", {"name": "M", "proof": proof}),
    ]
    for answer in answers:
        assert same(answer) == same(unknown)
    for word in ("Alice", "Bob", "HELP", "incident #"):
        assert word not in unknown.body
    assert site.desk.takes == []


async def test_an_incident_resolved_while_the_page_was_open_is_a_404(site: Site) -> None:
    c = site.client
    proof = proof_in((await c.get(f"/ack/{ACK_TOKEN}")).body)
    unknown = await c.get("/nope")
    site.desk.views[ACK_TOKEN] = replace(help_view(), state=IncidentState.RESOLVED)
    gone = await c.post(f"/ack/{ACK_TOKEN}", {"name": "Dana", "proof": proof})
    assert (gone.status, gone.body) == (404, unknown.body)


async def test_without_a_desk_there_are_no_ack_pages(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    server = WebServer(make_settings(tmp_path), store, clock, Verdict(clock))
    async with server.serving(), aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/ack/{ACK_TOKEN}") as r:
            ack = (r.status, await r.text())
        async with session.get(f"{server.url}/nope") as r:
            assert ack == (r.status, await r.text())
    assert ack[0] == 404


async def test_the_ack_page_is_rate_limited_per_client_address(site: Site) -> None:
    c = site.client
    path = f"/ack/{ACK_TOKEN}"
    for _ in range(30):
        assert (await c.get(path)).status == 200
    limited = await c.get(path)
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "60"
    assert "Too many requests" in limited.body
    assert "Alice" not in limited.body
    # Forged tokens count too (guessing), and so do POSTs, on their own budget.
    assert (await c.get("/ack/forged")).status == 429
    proof = site.server.ack.proof.issue(ACK_TOKEN, site.clock.now())
    answers = [(await c.post(path, {"name": "", "proof": proof})).status for _ in range(11)]
    assert answers == [422] * 10 + [429]
    assert site.desk.takes == []
    # Another client behind the proxy on this host has its own budget.
    other = await c.get(path, headers={"X-Forwarded-For": "203.0.113.7"})
    assert other.status == 200


# -- escaping ---------------------------------------------------------------------------------


async def test_names_and_texts_are_escaped_on_both_pages(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    state_with_an_open_help(store, who=SCRIPT, text=SCRIPT)
    view = replace(help_view(who=SCRIPT, text=SCRIPT), feed=SCRIPT,
                   told=(Told(T0 - 400, SCRIPT, SCRIPT),))  # fmt: skip
    desk = FakeDesk(clock, {ACK_TOKEN: view}, store)
    server = WebServer(make_settings(tmp_path), store, clock, Verdict(clock), ack_desk=desk)
    jar = aiohttp.CookieJar(unsafe=True)
    async with server.serving(), aiohttp.ClientSession(cookie_jar=jar) as session:
        assert server.url is not None
        c = Client(session, server.url)
        page = await c.get(f"/ack/{ACK_TOKEN}")
        board = await c.page(f"/status?token={STATUS_TOKEN}", allow_redirects=True)
        taken = await c.post(f"/ack/{ACK_TOKEN}", {"name": SCRIPT, "proof": proof_in(page.body)})
        board_after = await c.page("/status")
    for answer, times in ((page, 4), (board, 4), (taken, 3), (board_after, 4)):
        assert answer.status == 200
        assert SCRIPT not in answer.body
        assert "<script>alert" not in answer.body
        assert answer.body.count(ESCAPED) >= times, answer.body
    assert desk.takes == [("take", ACK_TOKEN, SCRIPT)]  # stored as typed, shown escaped
    assert f"Taken by {ESCAPED}" in taken.body
    assert f'data-name="{ESCAPED}"' in board.body  # the map's label, from an attribute


# -- the board --------------------------------------------------------------------------------


async def test_the_board_needs_its_token_then_keeps_a_cookie(site: Site) -> None:
    c = site.client
    refused = await c.page("/status")
    assert refused.status == 401
    assert '<form method="post" action="/status"' in refused.body
    assert "Alice" not in refused.body
    assert "46.5" not in refused.body

    wrong = await c.page("/status?token=wrong")
    assert wrong.status == 401
    assert "not the right one" in wrong.body

    # ?token= once: a cookie, and back to a bare /status (no token in the address bar).
    signed = await c.page(f"/status?token={STATUS_TOKEN}")
    assert signed.status == 303
    assert signed.headers["Location"] == "/status"
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/status" in cookie
    assert "Max-Age=604800" in cookie
    assert "Secure" not in cookie  # plain http on loopback: a Secure cookie never came back
    value = signed.cookies["alerter_status"]
    assert value != STATUS_TOKEN
    assert STATUS_TOKEN not in value
    assert len(value) == 64  # an HMAC-SHA256, in hex

    # The cookie alone.
    board = await c.page("/status")
    assert board.status == 200
    assert board.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Alice" in board.body

    # A cookie that is not the one is no key.
    c.session.cookie_jar.clear()
    c.session.cookie_jar.update_cookies({"alerter_status": "0" * 64})
    assert (await c.page("/status")).status == 401
    c.session.cookie_jar.update_cookies({"alerter_status": STATUS_TOKEN})
    assert (await c.page("/status")).status == 401

    # The form sets the same cookie.
    c.session.cookie_jar.clear()
    assert (await c.post("/status", {"token": "wrong"})).status == 401
    signed = await c.post("/status", {"token": STATUS_TOKEN})
    assert (signed.status, signed.headers["Location"]) == (303, "/status")
    assert signed.cookies["alerter_status"] == value
    assert (await c.page("/status")).status == 200


async def test_the_cookie_is_secure_behind_an_https_proxy(site: Site) -> None:
    signed = await site.client.page(
        f"/status?token={STATUS_TOKEN}", headers={"X-Forwarded-Proto": "https"}
    )
    assert "Secure" in signed.headers["Set-Cookie"]


async def test_the_status_json_is_unchanged_and_a_browser_gets_the_board(site: Site) -> None:
    c = site.client
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "application/json"},
                    {"Accept": "application/json, text/html"}):  # fmt: skip
        answer = await c.get(
            "/status", headers={"Authorization": f"Bearer {STATUS_TOKEN}", **headers}
        )
        assert answer.status == 200, headers
        assert answer.headers["Content-Type"].startswith("application/json")
        [incident] = json.loads(answer.body)["incidents"]
        assert incident["device"]["name"] == "Alice"
    unauthorized = await c.get("/status")
    assert (unauthorized.status, unauthorized.body) == (401, "")
    board = await c.get("/status", headers={"Authorization": f"Bearer {STATUS_TOKEN}",
                                            "Accept": BROWSER})  # fmt: skip
    assert board.headers["Content-Type"] == "text/html; charset=utf-8"


async def test_the_board_shows_incidents_devices_feeds_and_a_map(site: Site) -> None:
    c = site.client
    await c.page(f"/status?token={STATUS_TOKEN}")
    board = await c.page("/status")
    text = text_of(board.body)

    assert "Open incidents (1)" in text
    assert "#1 help: Alice open" in text
    # Its history, with why nobody was told of the update.
    assert "nobody told: a repeat within the rule's `updates` of the previous notification" in text
    # Each notification and who it reached (or why not yet).
    assert "HELP: Alice (Club)" in text
    assert "json://127.0.0.1/rescue: sent 07:53 UTC (08:53 CET), 6 min ago" in text
    assert "json://127.0.0.1/backup: failing (1 attempts): HTTP 500" in text
    # Recently resolved.
    assert "Recently resolved" in text
    assert "#2 stale-track: Bob resolved" in text
    # Devices: last message, time, battery, position, text; a coordinates table.
    assert "Alice Club HELP 07:53 UTC (08:53 CET), 7 min ago LOW 46.55000 7.98000" in text
    assert "Broken leg, need help" in text
    assert "Bob Club TRACK" in text
    assert 'class="device open" data-lat="46.55" data-lon="7.98" data-name="Alice"' in board.body
    # Feed health.
    assert "Club ok" in text
    # The map: the service's own Leaflet, our script, and a refresh every 30 s.
    assert '<div id="map" class="map" hidden></div>' in board.body
    assert '<script src="/static/leaflet/leaflet.js" defer></script>' in board.body
    assert '<script src="/static/board.js" defer></script>' in board.body
    assert '<link rel="stylesheet" href="/static/leaflet/leaflet.css">' in board.body
    assert '<meta http-equiv="refresh" content="30">' in board.body
    assert board.headers["Cache-Control"] == "no-store"

    # Taken: the board says by whom.
    proof = proof_in((await c.get(f"/ack/{ACK_TOKEN}")).body)
    await c.post(f"/ack/{ACK_TOKEN}", {"name": "Dana", "proof": proof})
    after = text_of((await c.page("/status")).body)
    assert "#1 help: Alice acknowledged" in after
    columns = {r["name"] for r in site.store._query("PRAGMA table_info(incidents)")}
    if "acknowledged_by" in columns:
        assert "Taken by Dana at 08:00 UTC" in after


async def test_wrong_status_tokens_are_rate_limited(site: Site) -> None:
    c = site.client
    for n in range(10):
        assert (await c.get(f"/status?token=wrong{n}")).status == 401
    assert (await c.get(f"/status?token={STATUS_TOKEN}")).status == 429
    assert (await c.page("/status")).status == 429
    assert (await c.post("/status", {"token": STATUS_TOKEN})).status == 429
    # Another address is not held back.
    other = await c.get(f"/status?token={STATUS_TOKEN}", headers={"X-Forwarded-For": "192.0.2.9"})
    assert other.status == 200


async def test_the_status_token_never_appears_in_any_response(site: Site) -> None:
    c = site.client
    await c.page("/status")
    await c.page(f"/status?token={STATUS_TOKEN}", allow_redirects=True)
    await c.get(f"/status?token={STATUS_TOKEN}")
    await c.get("/status", headers={"Authorization": f"Bearer {STATUS_TOKEN}"})
    await c.post("/status", {"token": STATUS_TOKEN})
    await c.post("/status", {"token": "wrong"})
    await c.get(f"/nope?token={STATUS_TOKEN}")
    page = await c.get(f"/ack/{ACK_TOKEN}?token={STATUS_TOKEN}")
    await c.post(f"/ack/{ACK_TOKEN}", {"name": STATUS_TOKEN, "proof": proof_in(page.body)})
    await c.get("/static/board.js")
    everything = "\n".join(c.seen)
    assert "Alice" in everything
    for secret in (STATUS_TOKEN, SECRET_KEY, PASSWORD, FEED_ID):
        assert secret not in everything, secret
        assert secret[:8] not in everything, secret


async def test_the_static_files_are_served_and_cacheable(site: Site) -> None:
    c = site.client
    for path, kind in (
        ("/static/leaflet/leaflet.js", "javascript"),
        ("/static/leaflet/leaflet.css", "text/css"),
        ("/static/leaflet/images/marker-icon.png", "image/png"),
        ("/static/board.js", "javascript"),
        ("/static/alerter.css", "text/css"),
    ):
        got = await c.get(path)
        assert got.status == 200, path
        assert kind in got.headers["Content-Type"], path
        assert got.headers["Cache-Control"] == "public, max-age=3600"
        assert got.headers["X-Content-Type-Options"] == "nosniff"
    licence = await c.get("/static/leaflet/LICENSE")
    assert "Volodymyr Agafonkin" in licence.body
    assert 'version="1.9.4"' in (await c.get("/static/leaflet/leaflet.js")).body
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/"):
        got = await c.get(path)
        assert got.status in (403, 404), path
        assert "WebServer" not in got.body


# -- the pure parts ---------------------------------------------------------------------------


def test_a_proof_fits_one_token_for_a_while() -> None:
    proof = FormProof(b"k" * 32)
    issued = proof.issue("tok", T0)
    assert proof.check("tok", issued, T0)
    assert proof.check("tok", issued, T0 + PROOF_TTL)
    assert not proof.check("tok", issued, T0 + PROOF_TTL + 1)
    assert not proof.check("tok", issued, T0 - 301)  # issued "in the future"
    assert not proof.check("tok2", issued, T0)
    assert not FormProof(b"j" * 32).check("tok", issued, T0)
    for bad in ("", ".", "x.y", f"{int(T0)}.", f"-1.{issued.split('.')[1]}", "9" * 40 + ".a"):
        assert not proof.check("tok", bad, T0), bad


@pytest.mark.parametrize(
    ("typed", "kept"),
    [
        ("Dana", "Dana"),
        ("  Dana \t Rescuer\n", "Dana Rescuer"),
        ("Da\u200bna\u0000", "Dana"),
        ("\u202eevil", "evil"),
        ("Zoë Müller", "Zoë Müller"),
        ("x" * 100, "x" * 60),
        ("", ""),
        ("\u0007", ""),
    ],
)
def test_names_are_cleaned(typed: str, kept: str) -> None:
    assert (clean_name(typed) or "") == kept


def test_the_rate_limiter_is_a_sliding_window_per_client() -> None:
    now = [0.0]
    limiter = RateLimiter(3, 60.0, timer=lambda: now[0], max_clients=4)
    assert [limiter.hit("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.spent("a")
    assert limiter.hit("b")
    now[0] = 59.9
    assert not limiter.hit("a")
    now[0] = 60.0
    assert limiter.hit("a")
    for client in "cdefg":  # more clients than it keeps: the idle ones are forgotten
        assert limiter.hit(client)
    assert len(limiter._seen) <= 4


async def test_forms_and_cookies_outlive_a_restart_when_there_is_a_stable_key(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    def server(**overrides: Any) -> WebServer:
        key = overrides.pop("key", None)
        settings = make_settings(tmp_path, **overrides)
        return WebServer(settings, store, clock, Verdict(clock), key=key)

    for before, after in (
        (server(key=b"k" * 32, secret_key=None), server(key=b"k" * 32, secret_key=None)),
        (server(), server()),  # ALERTER_SECRET_KEY
    ):
        assert before._cookie == after._cookie
        assert after.ack.proof.check(ACK_TOKEN, before.ack.proof.issue(ACK_TOKEN, T0), T0)
    # Neither: a key per process (a served form or a cookie lasts until a restart).
    before, after = server(secret_key=None), server(secret_key=None)
    assert before._cookie != after._cookie
    assert not after.ack.proof.check(ACK_TOKEN, before.ack.proof.issue(ACK_TOKEN, T0), T0)
