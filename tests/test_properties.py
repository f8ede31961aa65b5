"""Properties (hypothesis) of the engine, render, the rule loader and the scheduler.

Reproducible in CI like tests/test_parse.py's: derandomized (the same examples every
run), no example database in the tree, modest example counts so that each property
runs within a few seconds.

- The engine over random multi-cycle stories (tests/test_engine.py's `Story` plays the
  store's part between cycles): at most one open incident per device and rule, an
  uncancelled HELP stays open, reminders and updates keep their pace, a decision pages
  someone or says why not.
- Any page the parser could give, through `with_usable_time`, the engine and `render`:
  nothing raises, titles keep the fixed vocabulary, the SMS form fits two segments.
- Any YAML (random documents, and the default rule file mangled): a RuleSet or a
  ConfigError of `file:line` problems, never another exception.
- The scheduler: `plan_next` alone, then the real `Watcher` on a discrete-event virtual
  clock with a fake `FeedSource` (random durations and failures) and restarts (clean or
  kill -9) on the same SQLite file: both of SPOT's limits, as watch.py counts them.

Four properties found bugs, since fixed; each keeps its minimal failing case as an
explicit `@example`:
- a HELP-CANCEL that reached the engine after a newer HELP of the same incident closed
  the incident;
- the SMS form fell back to the raw device id when the name cleaned to nothing;
- a request went out `spacing` after the *start* of another still in flight, not after
  its end (the README's rule);
- after a kill -9 with a request in flight, both limits counted from that request's start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_engine import Story

from alerter.engine import EngineConfig
from alerter.errors import ConfigError, FeedBlocked, FeedConfigFault, FeedUnavailable
from alerter.models import (
    KNOWN_TYPES,
    PAGE_SIZE,
    Decision,
    FeedPage,
    IncidentState,
    Message,
    Reason,
    Received,
    Rendered,
)
from alerter.render import SMS_TWO, render
from alerter.rules.loader import load_rules
from alerter.rules.schema import RuleSet
from alerter.settings import FeedConfig, Settings
from alerter.spot.parse import EARLIEST_TIME, with_usable_time
from alerter.store import Store
from alerter.watch import Slot, Watcher, margin, plan_next, request_deadline

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_YML = ROOT / "rules" / "default.yml"
POLL = 150.0  # the poll interval rules are checked against (ALERTER_POLL_INTERVAL's default)

DEFAULT_RULES = load_rules(DEFAULT_YML, min_interval=POLL)

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

M = 60
H = 3600
T = 1_700_000_000


def load_text(folder: Path, text: str, name: str = "rules.yml") -> RuleSet:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return load_rules(path, min_interval=POLL)


# A rule set where every clock-driven path is busy: reminders and escalations on every
# opening rule, short updates, a reminder on a rule that notifies nobody.
BUSY_YML = """\
rules:
  - name: help
    when: {type: [HELP]}
    notify: [rescue]
    severity: critical
    repeat: 5m
    updates: 150s
    escalate:
      - {after: 10m, notify: [rescue-backup]}
      - {after: 1h, notify: [sar, rescue]}
  - name: help-cancel
    when: {type: [HELP-CANCEL]}
    resolves: help
    notify: [rescue]
  - name: stale-track
    when: {silent_for: 30m}
    notify: [rescue]
    repeat: 20m
    escalate: [{after: 1h, notify: [sar]}]
  - name: stop
    when: {type: [STOP, POWER-OFF]}
    resolves: stale-track
  - name: custom
    when: {type: [CUSTOM]}
    notify: [club]
    repeat: 30m
    updates: off
  - name: unknown-type
    when: {type: unknown}
    notify: [rescue]
    severity: critical
    repeat: 10m
    escalate: [{after: 25m, notify: [sar]}]
  - name: low-battery
    when: {battery: LOW}
    repeat: 1h
"""


@pytest.fixture(scope="module")
def busy_rules(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    return load_text(tmp_path_factory.mktemp("busy"), BUSY_YML)


# --- 1. the engine over random stories ---------------------------------------------------

TYPES = ("HELP", "HELP-CANCEL", "TRACK", "OK", "STOP", "CUSTOM", "SOS")


@dataclass(frozen=True)
class Sent:
    """A message of the story: what the device sent, and how long it took to reach us."""

    device: int
    type: str
    battery: str | None
    gap: int  # seconds after the previous message of the story
    lag: int  # seconds from sending to being visible in the feed
    fix: bool


@dataclass(frozen=True)
class Plot:
    """A random story: messages, the engine's cycle times, acknowledgements."""

    devices: int
    sent: tuple[Sent, ...]
    steps: tuple[int, ...]  # seconds between engine cycles (repeated) while messages come
    tail: tuple[int, ...]  # clock-only cycles after the last message arrived
    acks: frozenset[int]  # cycles after which the oldest open incident is acknowledged
    busy: bool  # the busy rule set instead of the default one


SENT = st.builds(
    Sent,
    device=st.integers(0, 2),
    # HELP and its cancel twice as likely as the others: their interplay is the point.
    type=st.sampled_from(("HELP", "HELP-CANCEL", *TYPES)),
    battery=st.sampled_from([None, "GOOD", "LOW"]),
    gap=st.one_of(st.integers(1, 20 * M), st.integers(1, 2 * H)),
    # Mostly prompt; some late enough to arrive after newer messages (out of order).
    lag=st.one_of(st.integers(0, 120), st.integers(0, 3 * H)),
    fix=st.booleans(),
)

PLOTS = st.builds(
    Plot,
    devices=st.integers(1, 3),
    sent=st.lists(SENT, min_size=1, max_size=24).map(tuple),
    steps=st.lists(st.integers(1, 2 * H), min_size=1, max_size=30).map(tuple),
    tail=st.lists(st.integers(1, 2 * H), max_size=4).map(tuple),
    acks=st.frozensets(st.integers(0, 40), max_size=3),
    busy=st.booleans(),
)


def play(plot: Plot) -> Iterator[tuple[float, list[Received]]]:
    """The story's cycles: (now, the messages stored since the previous cycle)."""
    ids = itertools.count(1000)
    arrivals: list[tuple[int, Received]] = []
    t = T
    for s in plot.sent:
        t += s.gap
        device = f"dev{s.device % plot.devices}"
        m = Message(
            id=next(ids), messenger_id=device, messenger_name=f"{device} SPOT", unix_time=t,
            type=s.type, latitude=46.5 if s.fix else None, longitude=7.5 if s.fix else None,
            battery=s.battery,
        )  # fmt: skip
        arrivals.append((t + s.lag, Received(m, "feed1", 0.0)))
    arrivals.sort(key=lambda a: a[0])
    # The steps repeat until every message has arrived, in at most about 60 cycles.
    last = max(a for a, _ in arrivals)
    floor = (last - T) / 60
    nows = [float(T)]
    for step in itertools.cycle(plot.steps):
        nows.append(nows[-1] + max(step, floor))
        if nows[-1] >= last:
            break
    for step in plot.tail:
        nows.append(nows[-1] + step)
    queue = list(reversed(arrivals))
    for now in nows[1:]:
        batch = []
        while queue and queue[-1][0] <= now:
            _, rec = queue.pop()
            batch.append(Received(rec.message, rec.feed_id, now))
        yield now, batch


@dataclass
class Watch:
    """What the properties remember across cycles."""

    rules: RuleSet
    delivered: list[Received] = field(default_factory=list)
    told: dict[int, float] = field(default_factory=dict)  # incident -> last notification
    reminded: dict[int, float] = field(default_factory=dict)  # incident -> last reminder
    newest_help: dict[str, int] = field(default_factory=dict)  # device -> HELP time
    # Devices that got a HELP-CANCEL in a later cycle than one of their newer HELPs.
    stale_cancel: set[str] = field(default_factory=set)

    def deliver(self, batch: Sequence[Received]) -> None:
        for rec in batch:
            m = rec.message
            if m.type == "HELP-CANCEL" and self.newest_help.get(m.messenger_id, 0) > m.unix_time:
                self.stale_cancel.add(m.messenger_id)
        for rec in batch:
            m = rec.message
            if m.type == "HELP":
                newest = max(self.newest_help.get(m.messenger_id, 0), m.unix_time)
                self.newest_help[m.messenger_id] = newest
        self.delivered.extend(batch)


def check_cycle(
    w: Watch, story: Story, now: float, decisions: Sequence[Decision], *, stale_too: bool
) -> None:
    """Every invariant after one cycle; `stale_too`: also for devices with a stale cancel."""
    rules = w.rules.by_name
    # At most one open (or acknowledged) incident per device and rule.
    open_keys = [(i.device_id, i.rule) for i in story.incidents.values() if i.is_open]
    assert len(open_keys) == len(set(open_keys)), sorted(open_keys)

    for d in decisions:
        # A decision pages someone, or says why nobody.
        assert bool(d.tags) != (d.held_back is not None), (d.reason, d.rule, d.tags, d.held_back)
        inc_id = d.incident.id
        assert inc_id is not None
        rule = rules[d.rule]
        if d.reason is Reason.REMINDED:
            assert rule.repeat is not None
            for since in (w.told.get(inc_id), w.reminded.get(inc_id)):
                assert since is None or now - since >= rule.repeat, (d.rule, since, now)
            w.reminded[inc_id] = now
        if d.reason is Reason.UPDATED and d.tags:
            assert rule.updates is not None
            since = w.told.get(inc_id)
            assert since is None or now - since >= rule.updates, (d.rule, since, now)
        # The incident's own circle: what its reminders and updates count from (an
        # escalation widens the circle without resetting their pace, by design).
        if d.tags and d.reason in (Reason.OPENED, Reason.UPDATED, Reason.REMINDED):
            w.told[inc_id] = now

    # A HELP that no HELP-CANCEL of its device followed (sent at the same time or later)
    # keeps that device's `help` incident open or acknowledged.
    for device, newest in w.newest_help.items():
        if device in w.stale_cancel and not stale_too:
            continue
        cancels = [
            r.message.unix_time
            for r in w.delivered
            if r.message.messenger_id == device and r.message.type == "HELP-CANCEL"
        ]
        if not any(c >= newest for c in cancels):
            helps = [
                i for i in story.incidents.values() if i.device_id == device and i.rule == "help"
            ]
            assert any(i.is_open for i in helps), (device, newest, cancels, helps)


def acknowledge_oldest(story: Story) -> None:
    """Someone takes the oldest open incident (what the ack page writes to the store)."""
    for inc in sorted(story.incidents.values(), key=lambda i: i.id or 0):
        if inc.state is IncidentState.OPEN:
            assert inc.id is not None
            story.incidents[inc.id] = dataclasses.replace(inc, state=IncidentState.ACKNOWLEDGED)
            return


def run_story(plot: Plot, rules: RuleSet, *, stale_too: bool) -> None:
    story = Story(rules=rules, config=EngineConfig())
    w = Watch(rules)
    for cycle_no, (now, batch) in enumerate(play(plot)):
        w.deliver(batch)
        result = story.step(now, *batch)  # `evaluate` must not raise
        check_cycle(w, story, now, result.decisions, stale_too=stale_too)
        if cycle_no in plot.acks:
            acknowledge_oldest(story)


@settings(PROPERTY, max_examples=400)
@given(plot=PLOTS)
def test_engine_invariants_over_random_stories(plot: Plot, busy_rules: RuleSet) -> None:
    run_story(plot, busy_rules if plot.busy else DEFAULT_RULES, stale_too=False)


# HELP, its cancel and tracking only, one or two devices, cancels often late.
HELP_PLOTS = st.builds(
    Plot,
    devices=st.integers(1, 2),
    sent=st.lists(
        st.builds(
            Sent,
            device=st.integers(0, 1),
            type=st.sampled_from(("HELP", "HELP-CANCEL", "HELP", "TRACK")),
            battery=st.none(),
            gap=st.integers(1, 10 * M),
            lag=st.one_of(st.integers(0, 60), st.integers(0, H)),
            fix=st.booleans(),
        ),
        min_size=3,
        max_size=12,
    ).map(tuple),
    steps=st.lists(st.integers(1, 10 * M), min_size=1, max_size=20).map(tuple),
    tail=st.lists(st.integers(1, H), max_size=2).map(tuple),
    acks=st.frozensets(st.integers(0, 20), max_size=2),
    busy=st.booleans(),
)

# HELP at T+1 (seen at T+1), HELP-CANCEL at T+2 that reaches SPOT late (seen at T+4),
# HELP again at T+3 (seen at T+3). The cancel is older than the second HELP, yet it
# closes the incident: "HELP cancelled" goes out while the device is in HELP.
STALE_CANCEL = Plot(
    devices=1,
    sent=(
        Sent(device=0, type="HELP", battery=None, gap=1, lag=0, fix=True),
        Sent(device=0, type="HELP-CANCEL", battery=None, gap=1, lag=2, fix=True),
        Sent(device=0, type="HELP", battery=None, gap=1, lag=0, fix=True),
    ),
    steps=(1,),
    tail=(),
    acks=frozenset(),
    busy=False,
)


@PROPERTY
@example(plot=STALE_CANCEL)
@given(plot=HELP_PLOTS)
def test_an_uncancelled_help_stays_open_whatever_the_arrival_order(
    plot: Plot, busy_rules: RuleSet
) -> None:
    run_story(plot, busy_rules if plot.busy else DEFAULT_RULES, stale_too=True)


# --- 2. any parsed page through the engine and render ------------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)
ZURICH = ZoneInfo("Europe/Zurich")
RECEIVED = st.integers(EARLIEST_TIME, 4_102_444_800)  # 2007 .. 2100: the service's clock

TEXT = st.text(max_size=60)
MESSAGES = st.builds(
    Message,
    id=INT64,
    messenger_id=st.one_of(st.sampled_from(["0-1", "0-2"]), TEXT),
    messenger_name=TEXT,
    # Whatever a device sends: any int64; near the clock; in milliseconds.
    unix_time=st.one_of(
        INT64,
        st.integers(EARLIEST_TIME, 4_102_444_800),
        st.integers(EARLIEST_TIME * 1000, 4_102_444_800 * 1000),
    ),
    type=st.one_of(st.sampled_from(sorted({*KNOWN_TYPES, "SOS"})), TEXT),
    latitude=st.none() | st.floats(-90, 90),
    longitude=st.none() | st.floats(-180, 180),
    altitude=st.none() | INT64,
    model_id=st.none() | TEXT,
    battery=st.one_of(st.none(), st.sampled_from(["GOOD", "LOW"]), TEXT),
    content=st.none() | st.text(max_size=400),
    date_time=st.none() | TEXT,
    extra=st.lists(st.tuples(TEXT, TEXT), max_size=3).map(lambda x: tuple(sorted(x))),
)
PAGES = st.builds(
    FeedPage,
    messages=st.lists(MESSAGES, max_size=8, unique_by=lambda m: m.id).map(tuple),
    feed_id=st.just("feed1"),
    feed_name=st.none() | TEXT,
)

# The fixed words a title starts with, up to its colon.
TITLE = re.compile(
    r"(?:Reminder \d+|Escalated|Acknowledged|HELP cancelled|Back in contact"
    r"|(?:HELP|Silent|Unknown message|Low battery|\S+ message)(?: update| resolved)?)"
    r"(?: \(late\))?: "
)


#: GSM 03.38 basic-table ASCII: what the SMS form is made of (render's docstring).
GSM_SAFE = frozenset(map(chr, range(0x20, 0x7F))) - frozenset("`^{}\\[]~|")


def render_story(
    page: FeedPage, received_at: int, initial: bool, later: int, feed_name: str
) -> list[tuple[Decision, Rendered]]:
    """The page as the watcher stores it, evaluated, then only the clock; each rendered."""
    now = float(received_at)
    batch = [Received(with_usable_time(m, now), "feed1", now, initial) for m in page.messages]
    story = Story(rules=DEFAULT_RULES, feed_names={"feed1": feed_name})
    out = []
    for at, msgs in ((now, batch), (now + later, [])):
        for d in story.step(at, *msgs).decisions:
            out.append((d, render(d, at, ZURICH)))
    return out


@PROPERTY
@given(
    page=PAGES,
    received_at=RECEIVED,
    initial=st.booleans(),
    later=st.integers(0, 30 * 86400),
    feed_name=TEXT,
)
def test_engine_and_render_take_any_parsed_page(
    page: FeedPage, received_at: int, initial: bool, later: int, feed_name: str
) -> None:
    for _, out in render_story(page, received_at, initial, later, feed_name):
        assert TITLE.match(out.title), out.title
        assert len(out.short) <= SMS_TWO, out.short


#: SPOT's messenger ids as real feeds carry them ("0-2345678"); names stay arbitrary.
SPOT_IDS = st.from_regex(r"0-[0-9]{1,10}", fullmatch=True)
REAL_ID_PAGES = st.builds(
    FeedPage,
    messages=st.lists(
        st.builds(dataclasses.replace, MESSAGES, messenger_id=st.one_of(st.just("0-1"), SPOT_IDS)),
        max_size=8,
        unique_by=lambda m: m.id,
    ).map(tuple),
)


@PROPERTY
@given(
    page=REAL_ID_PAGES,
    received_at=RECEIVED,
    initial=st.booleans(),
    later=st.integers(0, 30 * 86400),
    feed_name=TEXT,
)
def test_the_sms_form_is_gsm_safe(
    page: FeedPage, received_at: int, initial: bool, later: int, feed_name: str
) -> None:
    for _, out in render_story(page, received_at, initial, later, feed_name):
        assert set(out.short) <= GSM_SAFE, out.short


# A device whose name has no GSM-7 character left once cleaned (here: none at all).
NAMELESS = FeedPage(
    messages=(Message(id=1, messenger_id="\x80\n0-1", messenger_name="", unix_time=0, type="HELP"),)
)


@PROPERTY
@example(page=NAMELESS, received_at=1_700_000_000, initial=False, later=0, feed_name="")
@given(
    page=PAGES,
    received_at=RECEIVED,
    initial=st.booleans(),
    later=st.integers(0, 30 * 86400),
    feed_name=TEXT,
)
def test_the_sms_form_is_gsm_safe_whatever_the_device_id(
    page: FeedPage, received_at: int, initial: bool, later: int, feed_name: str
) -> None:
    for _, out in render_story(page, received_at, initial, later, feed_name):
        assert set(out.short) <= GSM_SAFE, out.short


# --- 3. any YAML: rules, or file:line problems --------------------------------------------

RULE_KEYS = st.sampled_from(
    [
        "rules", "name", "when", "type", "notify", "severity", "repeat", "updates",
        "escalate", "after", "resolves", "silent_for", "times_usual_gap", "at_least",
        "tracking", "battery", "device", "feed",
    ]
)  # fmt: skip
WORDS = st.sampled_from(
    [
        "help", "help-cancel", "HELP", "HELP-CANCEL", "HLEP", "SOS", "TRACK", "unknown",
        "LOW", "critical", "info", "15m", "150", "149", "0", "-5m", "1h30m", "off", "none",
        "rescue", "rescue-backup", "1e400", "9" * 400, "Anna*", "", " ", "\t", "\u200b",
    ]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    WORDS,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(RULE_KEYS, st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=25,
)
# Documents shaped like rule files more often than not, so validation is reached.
RULE_DOCS = st.one_of(
    VALUES,
    st.builds(
        lambda rules, extra: {"rules": rules, **extra},
        st.lists(st.dictionaries(RULE_KEYS, VALUES, max_size=8), max_size=4),
        st.dictionaries(st.text(max_size=8), SCALARS, max_size=1),
    ),
)


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    doc = draw(RULE_DOCS)
    return yaml.safe_dump(
        doc,
        default_flow_style=draw(st.sampled_from([False, True, None])),
        allow_unicode=draw(st.booleans()),
        sort_keys=False,
    )


DEFAULT_TEXT = DEFAULT_YML.read_text(encoding="utf-8")
ODD_CHARS = st.one_of(
    st.sampled_from(list(":-[]{}\"'&*!%@`#|>,?\t\n\x00\ufeff\u2028 0123456789")),
    st.characters(),
)
EDITS = st.lists(
    st.tuples(
        st.sampled_from(["delete", "duplicate", "replace", "insert"]),
        st.integers(0, 10**6),
        ODD_CHARS,
    ),
    min_size=1,
    max_size=6,
)


def mangle(text: str, edits: Sequence[tuple[str, int, str]]) -> str:
    """The text with lines deleted or duplicated and characters replaced or inserted."""
    for op, where, char in edits:
        lines = text.splitlines(keepends=True)
        if op in ("delete", "duplicate") and lines:
            i = where % len(lines)
            lines[i : i + 1] = [] if op == "delete" else [lines[i], lines[i]]
            text = "".join(lines)
        elif text:
            i = where % len(text)
            text = text[:i] + char + text[i + (op == "replace") :]
    return text


ANY_RULE_FILE = st.one_of(
    yaml_texts(),
    EDITS.map(lambda edits: mangle(DEFAULT_TEXT, edits)),
    st.text(max_size=200),
    st.binary(max_size=200),
)


@pytest.fixture(scope="module")
def rule_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("yaml") / "rules.yml"


@PROPERTY
@given(content=ANY_RULE_FILE)
def test_any_yaml_gives_rules_or_file_line_problems(content: str | bytes, rule_file: Path) -> None:
    data = content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass")
    rule_file.write_bytes(data)
    # YAML's own line breaks (NEL and the Unicode separators too), which its marks count.
    text = data.decode("utf-8", "replace")
    lines = len(re.findall(r"\r\n|[\n\r\x85\u2028\u2029]", text)) + 1
    try:
        found = load_rules(rule_file, min_interval=POLL)
    except ConfigError as exc:
        problems = exc.problems
        assert problems
    else:
        problems = list(found.warnings)
        for origin in found.origins.values():
            source, _, line = origin.rpartition(":")
            assert source == str(rule_file)
            assert 1 <= int(line) <= lines
    for p in problems:
        assert p.source == str(rule_file), p
        assert p.line is None or 1 <= p.line <= lines, (p, lines)
        assert p.message, p
        for named in re.findall(r"\bline (-?\d+)", p.message):
            assert 1 <= int(named) <= lines, (p, lines)
        # The loader's safety net for an exception it did not expect: never reached.
        assert "cannot be read as rules (" not in p.message, p


# --- 4. the scheduler: SPOT's limits ------------------------------------------------------


@st.composite
def slots(draw: st.DrawFn) -> tuple[list[Slot], float | None]:
    times = st.none() | st.floats(0, 10_000)
    feeds = draw(st.lists(st.tuples(times, times, st.booleans()), min_size=0, max_size=12))
    out = [Slot(f"F{i}", last, nb, busy) for i, (last, nb, busy) in enumerate(feeds)]
    known = [s.last_request for s in out if s.last_request is not None]
    # The latest request of all, at least each feed's own (the store's MAX(last_request)).
    last_any = draw(st.none() if not known else st.floats(max(known), 10_000))
    return out, last_any


LIMITS = st.tuples(st.floats(0.5, 300), st.floats(0.01, 5))


@settings(PROPERTY, max_examples=500)
@given(plan=slots(), limits=LIMITS)
def test_plan_next_never_plans_before_either_limit(
    plan: tuple[list[Slot], float | None], limits: tuple[float, float]
) -> None:
    slots_, last_any = plan
    interval, spacing = limits
    got = plan_next(slots_, last_any, interval, spacing)
    free = [s for s in slots_ if not s.busy]
    assert (got is None) == (not free)
    if got is None:
        return
    feed, at = got
    [chosen] = [s for s in slots_ if s.feed_id == feed]
    assert not chosen.busy
    if chosen.last_request is not None:
        assert at >= chosen.last_request + interval
    if chosen.not_before is not None:
        assert at >= chosen.not_before
    if last_any is not None:
        assert at >= last_any + spacing

    def due(s: Slot) -> float:
        t = -math.inf if s.last_request is None else s.last_request + interval
        return max(t, -math.inf if s.not_before is None else s.not_before)

    # Earliest due first: no free feed was due before the chosen one.
    assert all(due(s) >= due(chosen) - margin(interval) for s in free)


class VirtualClock:
    """A discrete-event clock: `sleep` waits until the driver moves time to its end."""

    def __init__(self, start: float) -> None:
        self.t = start
        self._mono0 = start - 12_345.0  # another origin: the watcher must anchor it
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t - self._mono0

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.t + max(0.0, seconds), next(self._order), future))
        await future

    async def settle(self) -> None:
        """Let every task run until each waits on this clock (nothing here does real I/O)."""
        for _ in range(20):  # a timer's chain of wake-ups takes about 6 loop iterations
            await asyncio.sleep(0)

    def advance(self, until: float = math.inf) -> bool:
        """Fire the next pending timer due by `until`: True; else move to `until`: False."""
        while self._timers:
            at, _, future = self._timers[0]
            if future.done():
                heapq.heappop(self._timers)  # its sleep was cancelled (a wake-up ended it)
                continue
            if at > until:
                break
            heapq.heappop(self._timers)
            self.t = max(self.t, at)
            future.set_result(None)
            return True
        if until < math.inf:
            self.t = max(self.t, until)
        return False


@dataclass(frozen=True)
class Behaviour:
    """How one request goes: how long it takes, and what comes back."""

    duration: float
    outcome: str  # empty, full (a 50-message page: paging back begins), or a failure


OUTCOMES = ["empty"] * 6 + ["full", "unavailable", "blocked", "config", "crash"]
BEHAVIOURS = st.builds(
    Behaviour,
    duration=st.one_of(st.floats(0, 0.2), st.floats(0, 10), st.just(0.0)),
    outcome=st.sampled_from(OUTCOMES),
)


@dataclass(frozen=True)
class Request:
    """One request as SPOT could see it: somewhere between its start and its end."""

    feed_id: str
    start: float
    end: float
    killed: bool  # the process died while it was in flight: its end was never recorded
    order: tuple[int, int]  # (start, end) in the order things happened, for equal times


@dataclass
class FakeSpot:
    """A FeedSource that records when each request began and ended, on the clock."""

    clock: VirtualClock
    script: Sequence[Behaviour]
    started: int = 0
    killing: bool = False  # the process is being killed (kill -9)
    deadline: float = math.inf  # the client's timeout: no request outlives it
    log: list[Request] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    events: Iterator[int] = field(default_factory=itertools.count)

    async def fetch(
        self, feed: FeedConfig, endpoint: str = "message", *, start: int | None = None
    ) -> FeedPage:
        begun, first = self.clock.now(), next(self.events)
        how = self.script[self.started % len(self.script)]
        self.started += 1
        try:
            await self.clock.sleep(min(how.duration, self.deadline))
            if how.duration > self.deadline:
                raise FeedUnavailable("timed out")  # as the real client's timeout does
            match how.outcome:
                case "unavailable":
                    raise FeedUnavailable("HTTP 503")
                case "blocked":
                    raise FeedBlocked("HTTP 403: SPOT blocked this IP or feed")
                case "config":
                    raise FeedConfigFault("E-0160", "Feed Not Found")
                case "crash":
                    raise RuntimeError("a fault nobody expected")
                case "full":
                    now = int(self.clock.now())
                    return FeedPage(
                        messages=tuple(
                            Message(next(self.ids), "0-1", "Dev", now - 60 * i, "TRACK")
                            for i in range(PAGE_SIZE)
                        )
                    )
            return FeedPage()
        finally:
            # Nothing awaits between here and the watcher's own end of the request.
            end = (first, next(self.events))
            self.log.append(Request(feed.id, begun, self.clock.now(), self.killing, end))


@dataclass(frozen=True)
class Restart:
    """Stop the service `wait` seconds after its `after`th request started; start it
    again `down` seconds later."""

    after: int
    wait: float
    down: float
    kill: bool  # kill -9: nothing more is written; else a clean stop (SIGTERM)


@dataclass(frozen=True)
class Run:
    feeds: int
    interval: float
    spacing: float
    script: tuple[Behaviour, ...]
    restarts: tuple[Restart, ...]


REQUESTS = 150  # per example, across its restarts
WAITS = st.one_of(st.just(0.0), st.floats(0, 10))
DOWNTIMES = st.one_of(st.just(0.0), st.floats(0, 600))


def restarts(kill: st.SearchStrategy[bool], wait: st.SearchStrategy[float] = WAITS) -> Any:
    return st.lists(
        st.builds(Restart, after=st.integers(1, REQUESTS), wait=wait, down=DOWNTIMES, kill=kill),
        max_size=3,
    ).map(lambda r: tuple(sorted(r, key=lambda x: x.after)))


RUNS = st.builds(
    Run,
    feeds=st.integers(1, 12),
    interval=st.floats(0.5, 300),
    spacing=st.floats(0.01, 5),
    script=st.lists(BEHAVIOURS, min_size=1, max_size=20).map(tuple),
    restarts=restarts(kill=st.booleans()),
)
CLEAN_RUNS = RUNS.map(
    lambda r: dataclasses.replace(
        r, restarts=tuple(dataclasses.replace(x, kill=False) for x in r.restarts)
    )
)


@st.composite
def short_request_runs(draw: st.DrawFn) -> Run:
    """Requests that never outlast the spacing (so none overlaps); kill -9 restarts."""
    spacing = draw(st.floats(0.01, 5))
    within = st.floats(0, spacing)
    return Run(
        feeds=draw(st.integers(1, 12)),
        interval=draw(st.floats(0.5, 300)),
        spacing=spacing,
        script=tuple(
            draw(st.lists(st.builds(Behaviour, within, st.sampled_from(OUTCOMES)), min_size=1))
        ),
        restarts=draw(restarts(kill=st.just(True), wait=within)),
    )


async def simulate(run: Run, state: Path) -> list[Request]:
    """The real Watcher on the virtual clock, restarted on the same SQLite file."""
    clock = VirtualClock(1_700_000_000.0)
    spot = FakeSpot(clock, run.script)
    config = Settings(
        _env_file=None,  # type: ignore[call-arg]
        feeds=[FeedConfig(id=f"FEED{i}") for i in range(run.feeds)],
        spot_base_url="http://127.0.0.1:9",  # not SPOT's host: any limits are accepted
        state_dir=state,
        poll_interval=run.interval,
        feed_spacing=run.spacing,
        blocked_backoff=3 * run.interval,
    )
    spot.deadline = request_deadline(config)
    pending = list(run.restarts)
    while spot.started < REQUESTS:
        store = Store.open(config.database)
        watcher = Watcher(config, spot, store, clock)
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        await clock.settle()  # started: its feeds' state is loaded
        until = pending.pop(0) if pending else Restart(REQUESTS, 0.0, 0.0, kill=False)
        deadline = math.inf
        while not task.done():
            await clock.settle()
            if deadline == math.inf and spot.started >= until.after:
                deadline = clock.now() + until.wait
            if not clock.advance(deadline):
                assert deadline < math.inf, "the watcher waits for nothing: it would never poll"
                break
        if until.kill:
            # The process dies: the store takes no more writes, requests in flight end.
            spot.killing = True
            store.close()
        stop.set()
        await clock.settle()
        assert task.done(), "the watcher did not stop"
        task.result()
        spot.killing = False
        if not until.kill:
            store.close()
        clock.t += until.down
    return spot.log


def assert_limits_as_scheduled(log: Sequence[Request], interval: float, spacing: float) -> None:
    """watch.py's rule: both limits count from each earlier request's end, and from its
    start while it is in flight or when its end was never recorded (a kill -9); a feed
    never has two requests in flight."""
    ordered = sorted(log, key=lambda r: r.order)
    for j, b in enumerate(ordered):
        for a in ordered[:j]:
            known_end = a.start if a.killed else a.end
            in_flight = a.order[1] > b.order[0]
            since = a.start if in_flight else known_end
            assert b.start - since >= spacing, (a, b, spacing)
            if a.feed_id == b.feed_id:
                assert not in_flight, (a, b)
                assert b.start - known_end >= interval, (a, b, interval)


def assert_limits_from_the_end(log: Sequence[Request], interval: float, spacing: float) -> None:
    """The README's rule: a request starts `spacing` after the end of every earlier one
    (SPOT sees a request anywhere between its start and its end), `interval` after the
    end of its own feed's previous one."""
    ordered = sorted(log, key=lambda r: r.order)
    for j, b in enumerate(ordered):
        for a in ordered[:j]:
            assert b.start - a.end >= spacing, (a, b, spacing)
            if a.feed_id == b.feed_id:
                assert b.start - a.end >= interval, (a, b, interval)


SCHEDULER = settings(PROPERTY, max_examples=40)


@SCHEDULER
@given(run=RUNS)
def test_the_watcher_keeps_both_limits_across_restarts(
    run: Run, tmp_path_factory: pytest.TempPathFactory
) -> None:
    log = asyncio.run(simulate(run, tmp_path_factory.mktemp("state")))
    assert len(log) >= REQUESTS
    assert_limits_as_scheduled(log, run.interval, run.spacing)


# Two feeds; every request takes 1 s, longer than the 0.5 s spacing.
OVERLAP = Run(2, 1.0, 0.5, (Behaviour(1.0, "empty"),), ())


@SCHEDULER
@example(run=OVERLAP)
@given(run=CLEAN_RUNS)
def test_no_request_starts_within_spacing_of_another_ones_end(
    run: Run, tmp_path_factory: pytest.TempPathFactory
) -> None:
    log = asyncio.run(simulate(run, tmp_path_factory.mktemp("state")))
    assert_limits_from_the_end(log, run.interval, run.spacing)


# One feed, interval 10 s; its second request (sent at 11.05 s, taking 1 s) is in flight
# when the service is killed at 11.55 s and restarted at once: the next request goes out
# at 21.1 s, 10.05 s after the killed one's start but only 9.55 s after its end.
KILLED_IN_FLIGHT = Run(1, 10.0, 2.0, (Behaviour(1.0, "empty"),), (Restart(2, 0.5, 0.0, kill=True),))


@SCHEDULER
@example(run=KILLED_IN_FLIGHT)
@given(run=short_request_runs())
def test_a_kill_9_mid_request_still_counts_the_limits_from_its_end(
    run: Run, tmp_path_factory: pytest.TempPathFactory
) -> None:
    log = asyncio.run(simulate(run, tmp_path_factory.mktemp("state")))
    assert_limits_from_the_end(log, run.interval, run.spacing)
