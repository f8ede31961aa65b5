"""The pages in a real browser: Debian's Chromium (`/usr/bin/chromium`) driven by
Playwright's Python package (`pip install playwright`; never `playwright install`, which
downloads a browser of its own: the machine's is used through `executable_path`).

- Today: the real `WebServer` in this process with a fake `AckDesk` (tests/test_pages.py)
  and a real store: open the ack link, see the incident, type a name, submit, see
  "Taken by NAME"; open the board with its token, see the incident acknowledged and the
  device in the coordinates table.
- Once `alerter.service.Service` has `ack_desk` (the composition root hands it to the
  WebServer): the same against the real `alerter run` (the `world` fixture), with the
  link taken from the HELP alert the json:// receiver got; then no reminder comes, and
  the recipients get one `Acknowledged` naming the person.

Each test skips, with its reason printed, when Chromium or Playwright cannot start. The
screenshots go to a new temporary folder; their paths are printed.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest
from e2e_support import World, until
from test_pages import (
    ACK_TOKEN,
    SCRIPT,
    STATUS_TOKEN,
    FakeDesk,
    Verdict,
    help_view,
    make_settings,
    state_with_an_open_help,
)

import alerter.service
from alerter.clock import FakeClock
from alerter.store import Store
from alerter.web import WebServer

CHROMIUM = "/usr/bin/chromium"
# As the machine's notes say: without the background-networking flags Chromium keeps
# trying to reach Google's hosts, which this network refuses. Playwright gives every
# launch a fresh, empty profile (its own --user-data-dir).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PHONE = {"width": 390, "height": 844}
NAME = "Dana Rescuer"
TILES = "https://tile.openstreetmap.org/"


def _skip(reason: str, capsys: pytest.CaptureFixture[str]) -> NoReturn:
    with capsys.disabled():
        print(f"\n[test_browser] skipped: {reason}")
    pytest.skip(reason)


@pytest.fixture
async def browser(capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Any]:
    """Chromium through Playwright, or a skip that says why not."""
    if shutil.which(CHROMIUM) is None:
        _skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", capsys)
    try:
        from playwright.async_api import async_playwright  # noqa: PLC0415 (skip if absent)
    except ImportError as exc:
        _skip(f"Playwright's Python package is not installed ({exc})", capsys)
    try:
        pw = await async_playwright().start()
    except Exception as exc:
        _skip(f"Playwright cannot start: {exc}", capsys)
    try:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
    except Exception as exc:
        await pw.stop()
        _skip(f"Chromium does not start under Playwright: {str(exc).splitlines()[0]}", capsys)
    try:
        yield chromium
    finally:
        await chromium.close()
        await pw.stop()


class Shots:
    """Screenshots in a new temporary folder, listed at the end of the test."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="alerter-screens-"))
        self.taken: list[tuple[Path, str]] = []
        self.capsys = capsys

    async def take(self, page: Any, name: str, what: str) -> None:
        path = self.folder / name
        await page.screenshot(path=str(path), full_page=True)
        self.taken.append((path, what))

    def report(self) -> None:
        with self.capsys.disabled():
            print(f"\n[test_browser] screenshots in {self.folder}:")
            for path, what in self.taken:
                print(f"  {path}: {what}")


@pytest.fixture
def shots(capsys: pytest.CaptureFixture[str]) -> Shots:
    return Shots(capsys)


class Watch:
    """What the page did that it should not: script errors, CSP violations, dialogs;
    and which tiles it asked OpenStreetMap for (the test answers them: no network here)."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        self.tile_referers: list[str | None] = []
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", self._console)
        page.on("dialog", self._dialog)

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.problems.append(f"console: {msg.text}")

    async def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"a dialog opened: {dialog.message}")
        await dialog.dismiss()

    async def offline_tiles(self, route: Any) -> None:
        """The tile server as an offline browser sees it (and what it was sent)."""
        self.tile_referers.append(await route.request.header_value("referer"))
        await route.abort("internetdisconnected")


async def new_page(browser: Any, base: str) -> tuple[Any, Any, Watch]:
    context = await browser.new_context(viewport=PHONE, device_scale_factor=2, has_touch=True)
    page = await context.new_page()
    watch = Watch(page)
    await page.route(f"{TILES}**", watch.offline_tiles)
    return context, page, watch


async def take_it(page: Any, url: str, who: str, shots: Shots) -> None:
    """Open the ack link, check the incident is shown, type the name, submit."""
    await page.goto(url)
    heading = await page.text_content("h1")
    assert heading == f"HELP: {who}"
    body = await page.inner_text("body")
    assert "Where" in body
    assert "Who was told" in body
    assert await page.locator("a.button", has_text="Open in OpenStreetMap").count() == 1
    await shots.take(page, "1-ack-page.png", f"the ack link: the HELP of {who}, the form")
    await page.fill("#name", NAME)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#taken")
    assert (await page.text_content("#taken") or "").strip() == f"Taken by {NAME}"
    await shots.take(page, "2-taken.png", f"after submitting: Taken by {NAME}")


async def board_shows_it(
    page: Any, base: str, who: str, shots: Shots, watch: Watch, context: Any
) -> None:
    """Open the board with its token: the incident acknowledged, the device's position."""
    await page.goto(f"{base}/status?token={STATUS_TOKEN}")
    assert page.url == f"{base}/status"  # the token left the address bar
    [cookie] = await context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
        "alerter_status", True, "Strict",
    )  # fmt: skip
    assert cookie["value"] != STATUS_TOKEN
    await page.reload()  # the cookie alone
    state = await page.text_content("#incident-1 .state")
    assert state == "acknowledged"
    assert NAME in await page.inner_text("#incident-1")
    row = page.locator("#devices tr.device", has_text=who)
    assert await row.count() == 1
    assert "46.55000" in await row.inner_text()
    # The map: Leaflet from the service itself, one marker per position; the tiles were
    # asked for with this site's origin as referrer (OpenStreetMap's policy), no path.
    await page.wait_for_selector("#map.leaflet-container")
    assert await page.locator("#map .leaflet-marker-icon").count() >= 1
    await until(lambda: watch.tile_referers, within=5, what="a tile request")
    assert set(watch.tile_referers) == {f"{base}/"}
    await shots.take(page, "3-board.png", "the board: incident acknowledged, devices table, map")


# -- today: the web server in this process, a fake desk ---------------------------------------


async def test_take_the_help_and_see_it_on_the_board_in_process(
    browser: Any, shots: Shots, tmp_path: Path, store: Store
) -> None:
    clock = FakeClock(1_800_000_000.0)
    state_with_an_open_help(store, text=SCRIPT)  # a message text that is a script
    desk = FakeDesk(clock, {ACK_TOKEN: help_view(text=SCRIPT)}, store)
    server = WebServer(make_settings(tmp_path), store, clock, Verdict(clock), ack_desk=desk)
    async with server.serving():
        assert server.url is not None
        base = server.url
        context, page, watch = await new_page(browser, base)
        try:
            await take_it(page, f"{base}/ack/{ACK_TOKEN}", "Alice", shots)
            assert desk.takes == [("take", ACK_TOKEN, NAME)]
            assert SCRIPT in await page.inner_text("body")  # shown as text, not run
            await board_shows_it(page, base, "Alice", shots, watch, context)
        finally:
            await context.close()
            shots.report()
    assert watch.problems == []


# -- once wired: the real service ---------------------------------------------------------------


def _service_has_an_ack_desk() -> bool:
    return "self.ack_desk" in inspect.getsource(alerter.service.Service)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_take_the_help_from_a_real_alert_and_the_reminders_stop(
    browser: Any, shots: Shots, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    if not _service_has_an_ack_desk():
        _skip("alerter.service.Service has no ack_desk yet (the ack pages are not wired)", capsys)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    service = await world.start(
        ALERTER_HTTP_LISTEN=f"127.0.0.1:{port}", ALERTER_PUBLIC_URL=base,
        ALERTER_STATUS_TOKEN=STATUS_TOKEN, ALERTER_SECRET_KEY="sk-Zq81-Wn47-Tx03-Lm52",
    )  # fmt: skip
    await world.next_polls(2)
    world.alice.send("HELP", world.now(), 46.55, 7.98)
    await until(lambda: "HELP" in world.got("/rescue"), what="the HELP alert")
    message = world.receiver.accepted("/rescue")[0]["message"]
    link = re.search(r"Acknowledge: (\S+)", message)
    assert link, message
    assert link.group(1).startswith(f"{base}/ack/")

    # A chat app's preview fetches the link: nothing is taken.
    async with aiohttp.ClientSession() as session, session.get(link.group(1)) as r:
        assert r.status == 200

    context, page, watch = await new_page(browser, base)
    try:
        await take_it(page, link.group(1), "Alice", shots)
        taken = {p: len(world.receiver.accepted(p)) for p in ("/rescue", "/backup")}
        await until(lambda: "Acknowledged" in world.got("/rescue"), what="Acknowledged")
        await board_shows_it(page, base, "Alice", shots, watch, context)
        # More than a reminder's `repeat` (4 s) and the escalation (2.5 s): none comes.
        await asyncio.sleep(6.0)
    finally:
        await context.close()
        shots.report()

    for path in ("/rescue", "/backup"):
        after = world.got(path)[taken[path] :]
        assert not {"Reminder", "Escalated", "HELP update"} & set(after), (path, after)
        acks = [b for b in world.receiver.accepted(path) if b["title"].startswith("Acknowledged")]
        assert len(acks) <= 1, path
        for ack in acks:
            assert NAME in ack["title"] + ack["message"]
    assert world.got("/rescue").count("Acknowledged") == 1
    assert watch.problems == []
    assert "Traceback" not in service.log()
