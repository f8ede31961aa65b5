"""Secrets masked in every spelling: the Masker, and each path text leaves the process by.

A feed password with every character that gets escaped somewhere (`&`, `+`, `/`, `"`, a
non-ASCII letter) is written each way a URL encoder, an XML or JSON serializer or Python
itself writes it (the ENCODERS table, built here independently of `alerter.masking`),
and must not survive, whole or as any 6-character piece, in: a plain text, a URL as
aiohttp sends it, a parse error of an XML or JSON body echoing it, a log record (its
traceback too), a FeedClient error from a real local server echoing the request, the
feed error the watcher stores (and the `Feed failing` notice quoting it), and
`notify.mask_text` (delivery errors).
"""

from __future__ import annotations

import asyncio
import html
import io
import json
import logging
import re
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape as xml_escape
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from yarl import URL

from alerter import masking
from alerter.cli import main, setup_logging
from alerter.clock import SystemClock
from alerter.errors import FeedConfigFault, FeedError, FeedUnavailable
from alerter.health import feed_health
from alerter.models import AdminKind, FeedPage, FeedStatus
from alerter.notify import load_targets, mask_text
from alerter.render import render_admin
from alerter.settings import FeedConfig, Settings, load_settings
from alerter.spot.client import FeedClient
from alerter.spot.parse import parse_feed
from alerter.store import Store
from alerter.watch import Watcher

PW = 'p&ss+w0rd/Ümlaut"x'
N = masking.FRAGMENT_MIN
BASE = "http://spot.test/feed"
LOCKED = FeedConfig(id="FEED1", password=SecretStr(PW), name="Club")


def aiohttp_query_value(secret: str) -> str:
    """The password as aiohttp puts it on the wire: the client's URL, `params=` applied
    the way `ClientSession._request` does (`url.update_query(params)`)."""
    url = URL(f"{BASE}/FEED1/message.xml").update_query({"feedPassword": secret})
    return url.raw_query_string.partition("feedPassword=")[2]


def lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


def char_refs(secret: str, form: str, non_ascii: bool = False) -> str:
    """Numeric character references for the markup characters (and non-ASCII ones)."""
    return "".join(
        form.format(ord(c)) if c in "&<>\"'" or (non_ascii and ord(c) > 127) else c for c in secret
    )


def gson(secret: str) -> str:
    """JSON as Gson writes it by default: `<>&='` as \\u escapes."""
    dumped = json.dumps(secret)[1:-1]
    return "".join(f"\\u{ord(c):04x}" if c in "<>&='" else c for c in dumped)


#: Each way a server, a serializer or Python writes the password (id, encoder).
ENCODERS: list[tuple[str, Callable[[str], str]]] = [
    ("raw", lambda s: s),
    ("quote", lambda s: quote(s, safe="")),
    ("quote-lower-hex", lambda s: lower_hex(quote(s, safe=""))),
    ("quote-default-safe", quote),
    ("quote_plus", quote_plus),
    ("quote_plus-lower-hex", lambda s: lower_hex(quote_plus(s))),
    ("aiohttp", aiohttp_query_value),
    ("aiohttp-lower-hex", lambda s: lower_hex(aiohttp_query_value(s))),
    ("html.escape", html.escape),
    ("html.escape-no-quote", lambda s: html.escape(s, quote=False)),
    ("xml-sax", xml_escape),
    ("xml-attr", lambda s: xml_escape(s, {'"': "&quot;"})),
    ("numeric-decimal", lambda s: char_refs(s, "&#{};")),
    ("numeric-hex", lambda s: char_refs(s, "&#x{:x};")),
    ("numeric-hex-upper", lambda s: char_refs(s, "&#X{:X};")),
    ("numeric-non-ascii", lambda s: char_refs(s, "&#{};", non_ascii=True)),
    ("json", lambda s: json.dumps(s, ensure_ascii=False)[1:-1]),
    ("json-ascii", lambda s: json.dumps(s)[1:-1]),
    ("json-ascii-upper-hex", lambda s: json.dumps(s)[1:-1].replace("\\u00dc", "\\u00DC")),
    ("json-escaped-slash", lambda s: json.dumps(s)[1:-1].replace("/", "\\/")),
    ("json-gson", gson),
    ("python-repr", lambda s: repr(s)[1:-1]),
    ("python-ascii", lambda s: ascii(s)[1:-1]),
    ("python-bytes", lambda s: repr(s.encode())[2:-1]),
    ("mixed-entities", lambda s: html.escape(s).replace("&quot;", "&#34;")),
    ("mixed-hex-case", lambda s: quote(s, safe="").replace("%2B", "%2b")),
]
ENCODER_PARAMS = [pytest.param(enc, id=name) for name, enc in ENCODERS]


def windows(secret: str = PW) -> set[str]:
    """Every N-character piece of every spelling in ENCODERS."""
    out = set()
    for _, enc in ENCODERS:
        spelled = enc(secret)
        out |= {spelled[i : i + N] for i in range(len(spelled) - N + 1)}
    return out


def leaks(text: str, secret: str = PW) -> list[str]:
    """The pieces of the secret (6+ characters, any spelling) that `text` still holds."""
    return sorted(w for w in windows(secret) if w in text)


@pytest.fixture
def logging_restored() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("", "apprise", "urllib3")]
    saved = [(lg, lg.level, list(lg.handlers)) for lg in loggers]
    yield
    for lg, level, handlers in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers


# -- the Masker: every spelling, whole and in pieces --------------------------------------


@pytest.mark.parametrize("encode", ENCODER_PARAMS)
def test_every_spelling_is_masked_whole(encode: Callable[[str], str]) -> None:
    spelled = encode(PW)
    assert masking.Masker([PW]).mask(f"before {spelled} after") == "before *** after"
    masking.register(PW)
    assert masking.mask(f"echo:{spelled}\n") == "echo:***\n"


@pytest.mark.parametrize("encode", ENCODER_PARAMS)
@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda s: s[:N], id="prefix-6"),
        pytest.param(lambda s: s[: len(s) // 2], id="prefix-half"),
        pytest.param(lambda s: s[:-1], id="truncated-by-one"),
        pytest.param(lambda s: s[-N:], id="suffix-6"),
        pytest.param(lambda s: s[len(s) // 3 :], id="suffix"),
        pytest.param(lambda s: s[2 : 2 + N], id="middle-6"),
        pytest.param(lambda s: s[3:-3], id="middle"),
    ],
)
def test_any_piece_of_six_or_more_is_masked(
    encode: Callable[[str], str], cut: Callable[[str], str]
) -> None:
    piece = cut(encode(PW))
    assert len(piece) >= N
    masked = masking.Masker([PW]).mask(f'excerpt "{piece}…" cut')
    assert masked == 'excerpt "***…" cut'


def test_mixed_spellings_are_masked_as_one() -> None:
    mixed = "p&amp;ss%2Bw0rd/&#xdc;mlaut&#34;x"
    assert masking.Masker([PW]).mask(f"[{mixed}]") == "[***]"


def test_squeezed_whitespace_is_a_spelling_too() -> None:
    # parse's excerpts turn tabs into spaces and squeeze runs of them.
    secret = "tab\there  two"
    assert masking.Masker([secret]).mask("said: tab here two.") == "said: ***."


@pytest.mark.parametrize(
    ("secret", "text", "masked"),
    [
        pytest.param("abc12", "pw abc12 and abc12x", "pw *** and ***x", id="short-whole"),
        pytest.param("abc12", "only abc1 here", "only abc1 here", id="short-piece-kept"),
        pytest.param("a&b", "q=a%26b&r=a&amp;b", "q=***&r=***", id="short-spellings"),
        pytest.param("ab", "ab ab", "ab ab", id="too-short-ignored"),
        pytest.param(PW, "p&ss+ only five", "p&ss+ only five", id="piece-under-6-kept"),
    ],
)
def test_short_secrets_and_short_pieces(secret: str, text: str, masked: str) -> None:
    assert masking.Masker([secret]).mask(text) == masked


def test_unrelated_text_is_untouched() -> None:
    masker = masking.Masker([PW, "hunter2pass", "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"])
    text = "2026-01-01 WARNING alerter.watch: feed Club: HTTP 500 (unavailable); retrying"
    assert masker.mask(text) is text
    assert masking.Masker().mask(text) is text


def test_bodies_keep_their_other_bytes() -> None:
    body = b"\xff\xfe<html>" + quote(PW).encode() + b" \x00 end"
    assert masking.Masker([PW]).mask_bytes(body) == b"\xff\xfe<html>*** \x00 end"


def test_fast_enough_for_every_log_record() -> None:
    secrets = [PW, *(f"feed-{i}-p&ss<w>Ü{i}" for i in range(30)), "hunter2pass"]
    began = time.perf_counter()
    masker = masking.Masker(secrets)
    built = time.perf_counter() - began
    line = "2026-01-01 12:00:00,000 WARNING alerter.watch: feed Club: HTTP 503; retrying" * 2
    began = time.perf_counter()
    for _ in range(1000):
        masker.mask(line)
    per_line = (time.perf_counter() - began) / 1000
    # Typically ~10 ms to build and ~20 µs a line; the bounds only catch a blow-up.
    assert built < 2.0
    assert per_line < 1e-3


# -- what is registered ----------------------------------------------------------------------

TG_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
TG_SECRET = TG_TOKEN.split(":")[1]
TWILIO_SID = "AC" + "a1b2c3d4" * 4
TWILIO_AUTH = "f00dfeedf00dfeedf00dfeedf00dfeed"


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        pytest.param(f"tgram://{TG_TOKEN}/12345", {TG_TOKEN, TG_SECRET}, id="telegram"),
        pytest.param(
            "tgram://123456789%3AAAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/12345/?detect=no",
            {TG_TOKEN, TG_SECRET},
            id="telegram-as-apprise-writes-it",
        ),
        pytest.param(
            "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",
            {"TIiajkdnlazkcOXrIdevi7FQ"},
            id="slack",
        ),
        pytest.param(
            f"twilio://{TWILIO_SID}:{TWILIO_AUTH}@15551234567/15557654321",
            {TWILIO_SID, TWILIO_AUTH, f"{TWILIO_SID}:{TWILIO_AUTH}"},  # as mask_url sees it too
            id="twilio",
        ),
        pytest.param(
            "mailto://alice:p%26ss%2Bw0rd@mail.example.org?to=b@y.org&from=Alerter",
            {"p&ss+w0rd"},
            id="mail-password-not-addresses",
        ),
        pytest.param(
            "json://host/hook?%2BX-Token=secret123&-apikey=k9&format=text&name=Club",
            {"secret123"},
            id="header-and-param",
        ),
        pytest.param(
            "form://host/x?token=abcdef&webhook=https%3A%2F%2Fh.example%2Fs%2FABCDEFGHIJKLMNOPQRST",
            {"abcdef", "ABCDEFGHIJKLMNOPQRST"},
            id="credential-keys-and-url-value",
        ),
    ],
)
def test_url_secrets(url: str, secrets: set[str]) -> None:
    assert masking.url_secrets(url) == secrets


def test_settings_register_every_secret(tmp_path: Path) -> None:
    settings = load_settings(
        env_file=None,
        feeds=[
            {"id": "FEEDA", "password": PW},
            {"id": "FEEDB"},
            {"id": "FEEDC", "password": "pw9"},
        ],
        heartbeat_url="https://hc.example/ping/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        status_token="status-token-value",
        state_dir=tmp_path,
    )
    masking.register_settings(settings)
    for secret in (PW, "pw9", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "status-token-value"):
        assert masking.mask(f"<{secret}>") == "<***>", secret
    assert masking.mask("https://hc.example/ping/") == "https://hc.example/ping/"


def test_run_registers_the_settings_before_anything_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logging_restored: None
) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("ALERTER_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALERTER_FEEDS", json.dumps([{"id": "FEEDA", "password": PW}]))
    monkeypatch.setenv("ALERTER_APPRISE_CONFIG", str(tmp_path / "missing.yml"))
    monkeypatch.setenv("ALERTER_STATE_DIR", str(tmp_path / "state"))
    assert main(["run"]) == 2  # refused: no Apprise config; the password is known by then
    assert masking.mask(quote(PW)) == "***"
    root = logging.getLogger()
    assert all(any(isinstance(f, masking.MaskingFilter) for f in h.filters) for h in root.handlers)


def test_load_targets_registers_the_urls_secrets(tmp_path: Path) -> None:
    config = tmp_path / "apprise.yml"
    config.write_text(
        "urls:\n"
        '  - "mailto://alice:hunter2pw@mail.y.org?to=b@y.org":\n      tag: admin\n'
        '  - "json://127.0.0.1:9/hook?+X-Token=tok%26en-42":\n      tag: admin\n'
    )
    load_targets(config)
    assert masking.mask("auth failed: alice:hunter2pw") == "auth failed: alice:***"
    assert masking.mask("header X-Token: tok&en-42.") == "header X-Token: ***."


# -- delivery errors: notify.mask_text ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("SMTP 535 authentication failed for alice:hunter2pw", id="whole"),
        pytest.param("server said: 'hunter2p…' refused", id="piece"),
        pytest.param("sent Authorization=hunter2pw%21", id="in-a-query"),
    ],
)
def test_mask_text_masks_a_short_registered_secret(text: str) -> None:
    masking.register("hunter2pw!")
    masked = mask_text(text)
    assert "hunter" not in masked
    assert "***" in masked


def test_mask_text_keeps_its_url_and_token_masking() -> None:
    masking.register("hunter2pw!")
    text = f"Failed https://api.telegram.org/bot{TG_TOKEN}/sendMessage on /bot{TG_TOKEN}/x"
    assert mask_text(text) == "Failed https://… on /…/x"


# -- a parser's error text: the escaped echo comes back decoded ------------------------------


def xml_error(text: str, code: str = "E-0999") -> bytes:
    return (
        f"<response><errors><error><code>{code}</code><text>{text}</text>"
        "<description>d</description></error></errors></response>"
    ).encode()


def json_error(text_json: str) -> bytes:
    return (
        f'{{"response":{{"errors":{{"error":{{"code":"E-0999","text":"{text_json}"}}}}}}}}'.encode()
    )


@pytest.mark.parametrize(
    ("body", "fmt"),
    [
        pytest.param(xml_error(f"Invalid password {html.escape(PW)}"), "xml", id="xml-named"),
        pytest.param(xml_error(f"Invalid {char_refs(PW, '&#{};')}"), "xml", id="xml-decimal"),
        pytest.param(xml_error(f"Bad {char_refs(PW, '&#x{:x};', True)}"), "xml", id="xml-hex"),
        pytest.param(xml_error(f"x {xml_escape(PW)}", code=html.escape(PW)), "xml", id="in-code"),
        pytest.param(json_error(f"Invalid password {gson(PW)}"), "json", id="json-gson"),
        pytest.param(json_error(f"Invalid {json.dumps(PW)[1:-1]}"), "json", id="json-ascii"),
        pytest.param(
            b"<response><feedMessageResponse><feed><name>" + html.escape(PW).encode()[:14],
            "xml",
            id="xml-truncated",
        ),
        pytest.param(
            b'{"response": {"name": "' + gson(PW).encode()[:11],
            "json",
            id="json-truncated",
        ),
    ],
)
def test_a_parse_error_echoing_the_password_is_masked(body: bytes, fmt: Any) -> None:
    with pytest.raises(FeedError) as info:
        parse_feed(body, fmt)
    assert leaks(str(info.value))  # the parser does quote it (decoded or cut)
    assert leaks(masking.Masker([PW]).mask(str(info.value))) == []


# -- the log: every record masked, tracebacks included ---------------------------------------


def fail(message: str) -> None:
    raise RuntimeError(message)


def test_log_records_are_masked_message_traceback_and_stack(
    monkeypatch: pytest.MonkeyPatch, logging_restored: None
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    masking.register(PW)
    setup_logging("INFO")
    log = logging.getLogger("alerter.test")
    wire = f"{BASE}/FEED1/message.xml?feedPassword={aiohttp_query_value(PW)}"
    log.warning("GET %s failed", wire)
    log.warning("SPOT said %r; params %a", html.escape(PW), {"feedPassword": PW})
    log.info("json body %s", json.dumps({"text": PW}))
    try:
        fail(f"cannot parse: {quote_plus(PW)} / {PW[:12]}")
    except RuntimeError:
        log.exception("unexpected error for %s", "Club")
    log.warning("where we were", stack_info=True)
    bad_format = "bad args %s %s"
    log.warning(bad_format, gson(PW))  # a format mismatch must not print in clear
    text = out.getvalue()
    assert leaks(text) == [], text
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: cannot parse: *** / ***" in text
    assert "Stack (most recent call last)" in text
    assert "GET http://spot.test/feed/FEED1/message.xml?feedPassword=*** failed" in text
    assert "alerter.test: bad args" in text


def test_a_record_without_secrets_keeps_its_exception(logging_restored: None) -> None:
    handler = logging.StreamHandler(io.StringIO())
    masking.install_log_filter(handler)
    masking.install_log_filter(handler)
    assert sum(isinstance(f, masking.MaskingFilter) for f in handler.filters) == 1
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "plain %s", ("text",), None)
    assert handler.filter(record)
    assert record.getMessage() == "plain text"  # nothing registered: left as it was


# -- FeedClient against a real local server echoing the request -----------------------------


@dataclass
class EchoServer:
    """A local HTTP server answering whatever `answer` builds from the request."""

    answer: Callable[[web.Request], tuple[int, str, bytes]] = lambda r: (200, "text/xml", b"")
    seen: list[str] = field(default_factory=list)
    base: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request.raw_path)
        status, ctype, body = self.answer(request)
        return web.Response(status=status, body=body, content_type=ctype)


@pytest.fixture
async def echo_server() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    app = web.Application()
    app.router.add_get("/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.base = f"http://127.0.0.1:{port}/feed"
    try:
        yield server
    finally:
        await runner.cleanup()


def _password(r: web.Request) -> str:
    return r.query["feedPassword"]


SERVER_ANSWERS: list[Any] = [
    pytest.param(
        lambda r: (500, "text/html", f"<html><body>Error: {r.raw_path}</body></html>".encode()),
        "xml", FeedUnavailable, "HTTP 500",
        id="html-500-echoes-url",  # a 5xx body is never read: guards the status path
    ),
    pytest.param(
        lambda r: (200, "text/html", f"<html>{r.raw_path}".encode()),
        "xml", FeedUnavailable, "HTML page",
        id="html-200-echoes-url-as-sent",
    ),
    pytest.param(
        lambda r: (200, "text/html", f"<html>{lower_hex(r.raw_path)}".encode()),
        "xml", FeedUnavailable, "HTML page",
        id="html-200-echoes-url-lower-hex",
    ),
    pytest.param(
        lambda r: (200, "text/html", f"<html>pw={html.escape(_password(r))}".encode()),
        "xml", FeedUnavailable, "HTML page",
        id="html-200-echoes-password-escaped",
    ),
    pytest.param(
        lambda r: (200, "text/xml", xml_error(f"Invalid {html.escape(_password(r))}")),
        "xml", FeedUnavailable, "SPOT error E-0999",
        id="xml-error-escaped-decoded-by-parser",
    ),
    pytest.param(
        lambda r: (200, "text/xml", xml_error(f"Invalid {char_refs(_password(r), '&#{};')}")),
        "xml", FeedUnavailable, "SPOT error E-0999",
        id="xml-error-numeric-refs",
    ),
    pytest.param(
        lambda r: (200, "text/xml", xml_error(f"Password required {xml_escape(_password(r))}")),
        "xml", FeedConfigFault, "Password required",
        id="xml-config-fault-quoting-password",
    ),
    pytest.param(
        lambda r: (200, "application/json", json_error(f"Invalid {gson(_password(r))}")),
        "json", FeedUnavailable, "SPOT error E-0999",
        id="json-error-gson-decoded-by-parser",
    ),
    pytest.param(
        lambda r: (200, "application/json", json_error(f"Bad {json.dumps(_password(r))[1:-1]}")),
        "json", FeedUnavailable, "SPOT error E-0999",
        id="json-error-ensure-ascii",
    ),
    pytest.param(
        lambda r: (200, "text/xml", b"<response><feedMessageResponse><feed><name>"
                   + r.raw_path.partition("=")[2].encode()[:14]),
        "xml", FeedUnavailable, "truncated or invalid XML",
        id="xml-truncated-in-the-echo",
    ),
    pytest.param(
        lambda r: (200, "application/json", b'{"q": "' + r.raw_path.encode()),
        "json", FeedUnavailable, "truncated or invalid JSON",
        id="json-truncated-echo",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("answer", "fmt", "kind", "says"), SERVER_ANSWERS)
async def test_feed_client_error_holds_no_spelling(
    echo_server: EchoServer,
    answer: Callable[[web.Request], tuple[int, str, bytes]],
    fmt: Any,
    kind: type[FeedError],
    says: str,
) -> None:
    echo_server.answer = answer
    async with aiohttp.ClientSession() as session:
        client = FeedClient(session, echo_server.base, fmt, timeout=5)
        with pytest.raises(FeedError) as info:
            await client.fetch(LOCKED)
    # The password went out as aiohttp encodes it (the spelling the table builds)...
    assert echo_server.seen[-1].endswith("feedPassword=" + aiohttp_query_value(PW))
    error = info.value
    told = "".join(traceback.format_exception(error)) + repr(error) + repr(error.args)
    assert type(error) is kind
    assert says in str(error)
    assert leaks(told) == [], told  # ...and comes back in no spelling, whole or in part
    assert error.__cause__ is None
    assert error.__context__ is None


# -- the watcher's stored error, `status` and the `Feed failing` notice ------------------------


class RaisingSource:
    """A FeedSource whose every request fails with `error`."""

    def __init__(self, error: FeedError) -> None:
        self.error = error

    async def fetch(self, feed: FeedConfig, endpoint: Any = "message", *,
                    start: int | None = None) -> FeedPage:  # fmt: skip
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(FeedUnavailable(f"SPOT error E-0999: {PW}"), id="decoded"),
        pytest.param(
            FeedUnavailable(f'HTML page: "<html>{aiohttp_query_value(PW)[:12]}…"'), id="cut-url"
        ),
        pytest.param(
            FeedConfigFault(None, f"Feed Password required {html.escape(PW)}"), id="config-fault"
        ),
    ],
)
async def test_the_stored_feed_error_is_masked(tmp_path: Path, error: FeedError) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        feeds=[LOCKED],
        spot_base_url="http://127.0.0.1:9/feed",
        state_dir=tmp_path,
        poll_interval=60.0,
        feed_spacing=0.01,
    )
    masking.register_settings(settings)  # as `alerter run` does
    store = Store.open(settings.database)
    try:
        watcher = Watcher(settings, RaisingSource(error), store, SystemClock())
        watcher.load()
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        deadline = time.monotonic() + 5
        while store.feed_states()["FEED1"].failures == 0:
            assert time.monotonic() < deadline, "no failure recorded"
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 2)
        state = store.feed_states()["FEED1"]
    finally:
        store.close()
    assert state.last_error is not None
    assert leaks(state.last_error) == [], state.last_error
    assert "***" in state.last_error
    # What admins read: the `Feed failing` notice quotes the stored error.
    failing_after = 0.0 if isinstance(error, FeedConfigFault) else 1e-9
    (health,) = feed_health({"FEED1": state}, {"FEED1": "Club"}, ["FEED1"],
                            time.time() + 1, 0.0, failing_after)  # fmt: skip
    assert health.status is FeedStatus.FAILING
    assert health.notice is not None
    assert health.notice.kind is AdminKind.FEED_FAILING
    rendered = render_admin(health.notice, time.time() + 1, ZoneInfo("UTC"))
    for text in (rendered.title, rendered.body, rendered.short):
        assert leaks(text) == [], text
