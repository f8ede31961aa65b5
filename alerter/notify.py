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
from collections.abc import Iterable, Iterator
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


def _entries(content: str, fmt: Any) -> list[tuple[int, str, str]]:
    """Each URL entry of the config: (line, text alone as a config of the same format, scheme)."""
    if fmt == "yaml":
        root = yaml.compose(content, Loader=yaml.SafeLoader)
        if not isinstance(root, yaml.MappingNode):
            return []
        out = []
        for key, value in root.value:
            if key.value != "urls" or not isinstance(value, yaml.SequenceNode):
                continue
            for item in value.value:
                data = yaml.safe_load(yaml.serialize(item))
                url = data if isinstance(data, str) else next(iter(data), "") if data else ""
                doc = yaml.safe_dump({"version": 1, "urls": [data]})
                out.append((item.start_mark.line + 1, doc, _scheme(str(url))))
        return out
    out = []
    for number, raw in enumerate(content.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;" or "://" not in line:
            continue
        out.append((number, line, _scheme(line)))
    return out


def load_targets(path: Path) -> Targets:
    """Targets from an Apprise config (YAML or TEXT); ConfigError names each bad URL, masked."""
    source = str(path)
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(source, None, f"cannot read: {exc.strerror}")]) from None
    fmt_enum = ConfigBase.detect_config_format(content)
    if not fmt_enum:
        raise ConfigError([Problem(source, None, "not an Apprise config (YAML or TEXT)")])
    fmt = fmt_enum.value
    problems: list[Problem] = []
    with _apprise_silenced():
        try:
            entries = _entries(content, fmt)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            raise ConfigError([Problem(source, line, "YAML syntax error")]) from None
        for line, text, scheme in entries:
            services, _ = ConfigBase.config_parse(text, config_format=fmt)
            if not services:
                what = f"this URL: {scheme}://…" if scheme else "this entry"
                problems.append(Problem(source, line, f"Apprise cannot use {what} (masked)"))
        services, includes = ConfigBase.config_parse(content, config_format=fmt)
    if includes:
        problems.append(Problem(source, None, "`include` is not supported: list URLs here"))
    if not services and not problems:
        problems.append(Problem(source, None, "no notification URL found"))
    if problems:
        raise ConfigError(problems)
    # Their secrets are masked wherever text leaves the process (logs, stored errors).
    plugins: list[Any] = list(services)
    masking.register_urls(str(plugin.url(privacy=False)) for plugin in plugins)
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
