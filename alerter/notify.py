"""Notification targets (an Apprise config file) and sending to one target at a time.

Each URL of the config becomes a Target with a stable id (a hash of the URL: the
outbox never stores a secret), a masked label for logs and status, its tags, and
whether it is SMS-sized (it then gets the short form). Sending goes to exactly one
target per call so the outbox records each target's result and retries only the
ones that failed.

Masking: Apprise's own `url(privacy=True)` leaves json/form header and query values
in clear (APPRISE.md), so every query value not known to be harmless is masked too.
Apprise's per-target throttle (`request_rate_per_sec`, 5.5 s for email) is set to 0:
a second alert must not wait behind a first one; a refused send is retried by the
outbox with backoff.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import apprise
import yaml
from apprise.common import NotifyFormat
from apprise.config.base import ConfigBase

from alerter import masking
from alerter.errors import ConfigError, Problem
from alerter.models import Severity

#: Targets whose plugin caps a message at this many characters get the SMS form.
SHORT_FORM_MAX = 500
#: A tag that asks for the SMS form whatever the plugin.
SHORT_FORM_TAG = "sms"
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{1,31}://\S+")
# A TEXT line is `[tags=]scheme://...` (Apprise's own pattern); a YAML entry is the URL alone.
_ENTRY_SCHEME = re.compile(r"^\s*(?:[\w,:\- \t]*=)?\s*([a-z0-9]{1,32})://", re.IGNORECASE)
_NOTIFY_TYPES = {
    Severity.CRITICAL: apprise.NotifyType.FAILURE,
    Severity.WARNING: apprise.NotifyType.WARNING,
    Severity.INFO: apprise.NotifyType.INFO,
}


def mask_url(url: str) -> str:
    """A URL safe to print: password, token-like path parts and query values masked.

    Meant for `url(privacy=True)` (Apprise masks the tokens it knows but not json/form
    header or query values); a raw URL still loses its password and long tokens.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unprintable URL)"
    user, at, host = parts.netloc.rpartition("@")
    netloc = f"{user.split(':', 1)[0]}:****@{host}" if at and ":" in user else parts.netloc
    query = urlencode(
        [
            (k, v if k.lower().lstrip("+-:") in masking.SAFE_QUERY else "***")
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit(
        (
            parts.scheme,
            masking.TOKENISH.sub("…", netloc),
            masking.TOKENISH.sub("…", parts.path),
            query,
            "",
        )
    )


def mask_text(text: str) -> str:
    """Library error text with URLs and token-like strings masked, and every registered
    secret (`alerter.masking`) in any spelling, or any 6+ character piece of one.

    URLs and 16+ token runs first (their `…` keeps the text readable), then the registry:
    a short password quoted by a plugin is masked too.
    """
    text = _URL_IN_TEXT.sub(lambda m: m.group(0).split("://")[0] + "://…", text)
    return masking.mask(masking.TOKENISH.sub("…", text))


@dataclass(frozen=True, slots=True)
class Target:
    """One notification URL from the Apprise config."""

    id: str
    label: str
    tags: frozenset[str]
    short: bool
    plugin: Any  # an apprise NotifyBase; Apprise's types are not exported for mypy


@dataclass(frozen=True, slots=True)
class Targets:
    """Every target of the Apprise config."""

    targets: tuple[Target, ...] = ()
    source: str = ""

    def tags(self) -> set[str]:
        """Every tag some URL carries."""
        return set().union(*(t.tags for t in self.targets))

    def for_tags(self, tags: Iterable[str], exclude: str | None = None) -> list[Target]:
        """The targets carrying any of `tags`, each once, in config order."""
        wanted = set(tags)
        return [t for t in self.targets if t.tags & wanted and t.id != exclude]

    def get(self, target_id: str) -> Target | None:
        """A target by id."""
        return next((t for t in self.targets if t.id == target_id), None)


def _target(plugin: Any) -> Target:
    # url() alone can be the bare scheme (custom schemes) and url_id() ignores the query
    # (json header values): together they tell targets apart, stably across reloads.
    url = f"{plugin.url(privacy=False)} {plugin.url_id()}"
    label = mask_url(plugin.url(privacy=True))
    if not urlsplit(label).netloc:
        label = f"{urlsplit(label).scheme}://{plugin.url_id()}"
    tags = frozenset(str(t) for t in plugin.tags)
    maxlen = getattr(plugin, "body_maxlen", 0) or 0
    # Alerts are rare and urgent: never wait behind Apprise's per-target throttle.
    plugin.request_rate_per_sec = 0
    return Target(
        id=hashlib.sha256(url.encode()).hexdigest()[:16],
        label=label,
        tags=tags,
        short=0 < maxlen <= SHORT_FORM_MAX or SHORT_FORM_TAG in tags,
        plugin=plugin,
    )


def _scheme(entry: str) -> str:
    """The scheme of a config entry, and never any other part of it (the rest may be secret)."""
    m = _ENTRY_SCHEME.match(entry)
    return m.group(1) if m else ""


class _ThisThreadOnly(logging.Filter):
    """Drops the records of the thread that created it."""

    def __init__(self) -> None:
        super().__init__()
        self.ident = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.ident


@contextmanager
def _apprise_silenced() -> Iterator[None]:
    """Keep Apprise's config parser quiet: it logs a rejected entry in clear, secrets and all.

    Only this thread's records are dropped: sends running meanwhile in worker threads
    still log their failures.
    """
    logger = logging.getLogger("apprise")
    only_here = _ThisThreadOnly()
    logger.addFilter(only_here)
    try:
        yield
    finally:
        logger.removeFilter(only_here)


# -- reading the Apprise config, with every problem named ---------------------------------

# Apprise's own pattern of a TEXT line (apprise/config/base.py): `[TAGS=]URL`, a comment,
# a tag group (`group=tag, tag`) or `include`. A line it does not match voids the whole file.
_TEXT_LINE = re.compile(
    r"^(?:[;#].*|(?:(?P<tags>[a-z0-9,_:-]+(?:[ \t]+[a-z0-9,_:-]+)*)\s*=|=)?\s*"
    r"(?:(?P<url>[a-z0-9]{1,32}://.*)|(?P<assign>[a-z0-9,_-]+(?:[ \t]+[a-z0-9,_-]+)*))|"
    r"include\s+(?P<include>.+))?$",
    re.IGNORECASE,
)
# Tags written before a URL without the `=`: `rescue json://...`, `rescue: json://...`.
_TAGS_WITHOUT_EQUALS = re.compile(
    r"^(?P<tags>[a-z0-9,_-]+(?:[ \t,]+[a-z0-9,_-]+)*):?[ \t]+(?P<scheme>[a-z0-9]{1,32})://",
    re.IGNORECASE,
)
_TAG_SPLIT = re.compile(r"[\s,]+")
_YAML_TOP = re.compile(r"^(?:urls|version)\s*:", re.MULTILINE)
# A tag setting written without its colon: `- tag rescue`.
_TAG_WITHOUT_COLON = re.compile(r"^(?P<key>tags?)\s+(?P<tags>[\w, -]{1,60})$", re.IGNORECASE)
_ARG_KEY = re.compile(r"^[A-Za-z_][\w-]{0,30}$")

#: What admins leave in a URL copied from an example, each with the label a problem shows
#: (never the text found: it sits where a secret goes).
_PLACEHOLDERS = (
    (re.compile(r"<[^<>]*>"), "<…>"),
    (
        re.compile(
            r"YOUR[A-Z_-]|(?i:your)[-_]?[-_a-z0-9]*?(?i:token|password|pass|key|secret|user|name"
            r"|host|domain|mail|id|chat|channel|webhook|hook|topic|number|phone|account|sid|auth)"
        ),
        "YOUR…",
    ),
    (re.compile(r"(?i:(?<![a-z0-9])x{4,}|x{4,}(?![a-z0-9]))"), "xxxx"),
    (re.compile(r"(?i:(?:^|(?<=[.@/:]))example\.(?:com|org|net)(?![a-z0-9-]))"), "example.com"),
    (re.compile(r"(?i:change[-_]?me)"), "changeme"),
    (re.compile(r"(?i:replace[-_ ]?(?:me|with|this))"), "REPLACE-ME"),
    (re.compile(r"(?i:placeholder)"), "placeholder"),
)


def _placeholders(strings: Iterable[str]) -> list[str]:
    """The kinds of placeholder found in `strings`, by label, in a fixed order."""
    return [label for pattern, label in _PLACEHOLDERS if any(pattern.search(s) for s in strings)]


def _has_host(url: str) -> bool:
    """True when something stands between `scheme://` and the path, query or port."""
    authority = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]
    host = authority.rpartition("@")[2]
    return bool(host) and not host.startswith(":")


@dataclass(frozen=True, slots=True)
class _Entry:
    """One URL of the config as written (its URL and values may be secret: never printed)."""

    line: int
    text: str  # the entry alone, as a config of the same format
    bare: str  # its URL alone, as a config of the same format
    url: str
    strings: tuple[str, ...]  # the URL and every value written for it but tags
    tags: frozenset[str]  # the tags written on it
    host_given: bool = False  # a YAML `host:` setting supplies the host
    faults: tuple[tuple[int, str], ...] = ()  # (line, message): its shape is wrong


@dataclass(frozen=True, slots=True)
class TargetsReading:
    """What could be read of an Apprise config, and every problem in it.

    `targets`: what Apprise can use (all of it when there is no problem). `tags`: every tag
    written on a URL, usable or not, so rules are still checked against them; None when no
    URL could be read at all (an unreadable file, a YAML syntax error, no URL).
    """

    targets: Targets
    problems: list[Problem]
    tags: frozenset[str] | None


def _tags_of(value: object) -> set[str]:
    """Tags as Apprise reads a `tag:` value: a list, or words split by commas and spaces."""
    items = value if isinstance(value, list) else [value]
    return {t for item in items if item is not None for t in _TAG_SPLIT.split(str(item)) if t}


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() if str(k) not in ("tag", "tags") for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _scalar_fault(node: yaml.ScalarNode) -> tuple[int, str, set[str]]:
    """A bare word where a `key: value` setting belongs (under a URL), and the tags it
    meant (they count as written: the fault is said once, not again as unknown tags)."""
    line = node.start_mark.line + 1
    m = _TAG_WITHOUT_COLON.match(str(node.value).strip())
    if m:
        message = f"'{m['key']} {m['tags']}' has no colon: write '{m['key']}: {m['tags']}'"
        return line, message, _tags_of(m["tags"])
    return line, "expected a `key: value` setting under the URL above (a colon missing?)", set()


def _yaml_entry(item: yaml.Node) -> _Entry:
    """One item of `urls:`: `- URL`, or `- URL:` with its settings (a list or a mapping)."""
    line = item.start_mark.line + 1
    data = yaml.safe_load(yaml.serialize(item))
    faults: list[tuple[int, str]] = []
    url, args, arg_nodes = "", None, None
    if isinstance(item, yaml.ScalarNode):
        url = "" if data is None else str(data)
    elif isinstance(item, yaml.MappingNode) and item.value:
        (key, arg_nodes), *others = item.value
        url, args = str(key.value), data.get(key.value) if isinstance(data, dict) else None
        for other, _ in others:  # Apprise reads the first key only, silently
            name = str(other.value) if isinstance(other, yaml.ScalarNode) else ""
            faults.append(
                (
                    other.start_mark.line + 1,
                    f"'{name}' is at the level of the URL above it: indent it under that URL"
                    if _ARG_KEY.match(name)
                    else "a second URL in one entry: start it with its own '- '",
                )
            )
    settings_nodes: list[yaml.Node] = []
    bare_words: list[yaml.ScalarNode] = []
    if isinstance(arg_nodes, yaml.ScalarNode) and arg_nodes.tag != "tag:yaml.org,2002:null":
        bare_words.append(arg_nodes)
    elif isinstance(arg_nodes, yaml.SequenceNode):
        for node in arg_nodes.value:
            (bare_words if isinstance(node, yaml.ScalarNode) else settings_nodes).append(node)
    elif isinstance(arg_nodes, yaml.MappingNode):
        settings_nodes.append(arg_nodes)
    tags: set[str] = set()
    for word in bare_words:
        fault_line, message, meant = _scalar_fault(word)
        faults.append((fault_line, message))
        tags |= meant
    for node in settings_nodes:
        for key, _ in node.value if isinstance(node, yaml.MappingNode) else []:
            if "://" in str(key.value):  # a URL indented under another: Apprise drops it
                faults.append(
                    (
                        key.start_mark.line + 1,
                        f"a URL ({_scheme(str(key.value))}://…) among the settings of the URL "
                        "above it: start it with its own '- ' at that URL's level",
                    )
                )
    dicts = [a for a in (args if isinstance(args, list) else [args]) if isinstance(a, dict)]
    tags = tags.union(*(_tags_of(d.get("tag", d.get("tags"))) for d in dicts))
    return _Entry(
        line=line,
        text=yaml.safe_dump({"version": 1, "urls": [data]}),
        bare=yaml.safe_dump({"version": 1, "urls": [url]}),
        url=url,
        strings=(url, *_strings(dicts)),
        tags=frozenset(tags),
        host_given=any("host" in d for d in dicts),
        faults=tuple(faults),
    )


def _yaml_entries(content: str, report: Callable[[int | None, str], None]) -> list[_Entry]:
    root = yaml.compose(content, Loader=yaml.SafeLoader)
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        report(root.start_mark.line + 1, "not an Apprise config: expected `urls:` with a list")
        return []
    entries: list[_Entry] = []
    shared: set[str] = set()  # a top-level `tag:` applies to every URL
    for key, value in root.value:
        line = key.start_mark.line + 1
        if key.value == "include":
            report(line, "`include` is not supported: list URLs here")
        elif key.value == "tag":
            shared |= _tags_of(yaml.safe_load(yaml.serialize(value)))
        elif key.value == "urls" and isinstance(value, yaml.SequenceNode):
            entries.extend(_yaml_entry(item) for item in value.value)
        elif key.value == "urls" and value.tag != "tag:yaml.org,2002:null":
            report(line, "`urls:` must be a list, each URL starting with '- '")
    return [replace(e, tags=e.tags | shared) for e in entries]


def _text_entries(content: str, report: Callable[[int | None, str], None]) -> list[_Entry]:
    entries: list[_Entry] = []
    for number, raw in enumerate(content.splitlines(), start=1):
        line = raw.strip()
        m = _TEXT_LINE.match(line)
        if not line:
            continue
        if m and m["include"]:
            report(number, "`include` is not supported: list URLs here")
        elif m and m["url"]:
            tags = _tags_of(m["tags"] or "")
            entries.append(_Entry(number, line, m["url"], m["url"], (m["url"],), frozenset(tags)))
        elif m and (m["tags"] or not m["assign"]):
            continue  # a comment, or a tag group (`group=tag, tag`)
        elif missing := _TAGS_WITHOUT_EQUALS.match(line):
            tags = _tags_of(missing["tags"])
            url = line[missing.end("tags") :].lstrip(": \t")
            fault = (
                f"tags and URL need '=' between them: write "
                f"'{','.join(sorted(tags))}={missing['scheme']}://…'"
            )
            entries.append(
                _Entry(number, line, url, url, (url,), frozenset(tags), faults=((number, fault),))
            )
        elif "://" in line:  # Apprise cannot read it: said as before, scheme only
            entries.append(_Entry(number, line, line, line, (line,), frozenset()))
        else:
            report(number, "not an Apprise TEXT line (`TAGS=URL`, a `#` comment or a tag group)")
    return entries


def _judge(source: str, fmt: str, entry: _Entry, services: list[Any]) -> list[Problem]:
    """The problems of one entry, given what Apprise made of it: never a secret in them."""
    problems = [Problem(source, line, message) for line, message in entry.faults]

    def report(message: str) -> None:
        problems.append(Problem(source, entry.line, message))

    scheme = _scheme(entry.url)
    what = f"this URL: {scheme}://… (masked)" if scheme else "this entry (masked)"
    found = _placeholders(entry.strings)
    if found:  # the admin's next step either way: no use judging the URL further
        report(f"placeholder left in {what}: {', '.join(found)}: put in the real values, "
               "or delete the entry")  # fmt: skip
        return problems
    if entry.faults:  # judge the URL alone: was it the shape, or the URL too?
        services = list(ConfigBase.config_parse(entry.bare, config_format=fmt)[0])
    if not services:
        reason = ": it has no host" if scheme and not _has_host(entry.url) else ""
        report(f"Apprise cannot use {what}{reason}")
    for plugin in services:
        token = getattr(plugin, "template_tokens", {}).get("host") or {}
        if token.get("required") and (
            not getattr(plugin, "host", None) or not (_has_host(entry.url) or entry.host_given)
        ):  # `json://`: Apprise takes it, and every send would fail
            report(f"this URL has no host: {scheme}://… (masked)")
        elif getattr(plugin, "topics", None) == []:  # `ntfys://ntfy.sh`: nobody would read it
            report(f"this URL names no topic: {scheme}://… (masked)")
    return problems


def _config_format(content: str, path: Path) -> str:
    """YAML or TEXT as Apprise detects it, by its first line; by the file's name when that
    line is wrong, or reads as YAML (`rescue: json://...`) in a TEXT file without `urls:`."""
    fmt = ConfigBase.detect_config_format(content)
    named_yaml = path.suffix.lower() in (".yml", ".yaml")
    if fmt and (fmt.value != "yaml" or named_yaml or _YAML_TOP.search(content)):
        return str(fmt.value)
    return "yaml" if named_yaml else "text"


def read_targets(path: Path) -> TargetsReading:
    """An Apprise config (YAML or TEXT): its targets, and every problem, each at its line.

    Besides what Apprise refuses: a placeholder left from an example (`YOUR…`, `xxxx`,
    `example.com`, `<…>`, `changeme`, `REPLACE-ME`), a URL without host or topic, a tag
    line without its colon (blamed on that line), tags before a TEXT URL without `=`, a
    setting at the URL's level, YAML syntax errors with the parser's words. Problems name
    the scheme only: the rest of a URL may be secret.
    """
    source = str(path)
    problems: list[Problem] = []

    def report(line: int | None, message: str) -> None:
        problems.append(Problem(source, line, message))

    def unreadable(message: str, line: int | None = None) -> TargetsReading:
        return TargetsReading(Targets((), source), [Problem(source, line, message)], None)

    try:
        data = path.read_bytes()
    except OSError as exc:
        return unreadable(f"cannot read: {exc.strerror or exc}")
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return unreadable(f"not UTF-8 text (byte 0x{data[exc.start]:02x}): save it as UTF-8", line)
    fmt = _config_format(content, path)
    services: list[Any] = []
    with _apprise_silenced():
        try:
            entries = (_yaml_entries if fmt == "yaml" else _text_entries)(content, report)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            detail = getattr(exc, "problem", None) or "cannot be parsed"
            return unreadable(
                f"YAML syntax error: {detail}", mark.line + 1 if mark is not None else None
            )
        tags: set[str] = set()
        for entry in entries:
            found: list[Any] = list(ConfigBase.config_parse(entry.text, config_format=fmt)[0])
            problems.extend(_judge(source, fmt, entry, found))
            services.extend(found)
            tags |= entry.tags | {str(t) for plugin in found for t in plugin.tags}
        if not problems:  # the whole file, as the service will read it (top-level settings)
            services = list(ConfigBase.config_parse(content, config_format=fmt)[0])
    if not entries and not problems:
        report(None, "no notification URL found")
    problems.sort(key=lambda p: p.line or 0)
    targets = _targets(services, source)
    return TargetsReading(targets, problems, frozenset(tags | targets.tags()) if entries else None)


def _targets(services: list[Any], source: str) -> Targets:
    # Their secrets are masked wherever text leaves the process (logs, stored errors).
    masking.register_urls(str(plugin.url(privacy=False)) for plugin in services)
    merged: dict[str, Target] = {}
    for service in services:
        target = _target(service)
        seen = merged.get(target.id)
        # One URL listed twice (under `rescue` and under `admin`, say) is one recipient: one
        # target with both tags, or an alert for both tags would reach it twice.
        merged[target.id] = (
            target
            if seen is None
            else replace(seen, tags=seen.tags | target.tags, short=seen.short or target.short)
        )
    return Targets(tuple(merged.values()), source)


def load_targets(path: Path) -> Targets:
    """Targets from an Apprise config (YAML or TEXT); ConfigError names each problem, masked."""
    reading = read_targets(path)
    if reading.problems:
        raise ConfigError(reading.problems)
    return reading.targets


@dataclass(frozen=True, slots=True)
class SendResult:
    """One target's answer."""

    ok: bool
    error: str = ""


class Notifier(Protocol):
    """Sends one message to one target."""

    async def send(self, target: Target, title: str, body: str, severity: Severity) -> SendResult:
        """Deliver; never raises for a delivery failure."""
        ...


class AppriseNotifier:
    """Sends through Apprise 2.x, reading the per-target result."""

    async def send(self, target: Target, title: str, body: str, severity: Severity) -> SendResult:
        """Deliver to one target; the result carries a masked error on failure."""
        ap = apprise.Apprise()
        ap.add(target.plugin)
        result = await ap.async_notify(
            body=body,
            title=title,
            notify_type=_NOTIFY_TYPES[severity],
            body_format=NotifyFormat.TEXT,
        )
        if result:
            return SendResult(True)
        details = [
            mask_text(str(getattr(entry, "message", entry)))
            for r in result.results
            for entry in r.logs()
        ]
        status = result.results[0].status.name if result.results else result.status.name
        return SendResult(False, "; ".join([status, *details[-2:]])[:300])
