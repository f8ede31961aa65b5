"""Secrets masked in every spelling, wherever text leaves the process (pure; stdlib only).

A secret (a feed password, an Apprise token) rarely leaks as itself: SPOT or a proxy
echoes the request URL as aiohttp encoded it (`%26`, `%2B`, `%2b`), an XML or JSON error
body escapes it (`&amp;`, `&#38;`, `\\u0026`) and the parser decodes it back into an
error text, an excerpt cuts it short. A `Masker` knows every spelling of each secret
(`spellings`) and replaces any of them, or any fragment of one, by `***`:

- raw; percent-encoded as `quote(safe='')`, `quote()`, `quote_plus()` and as aiohttp
  (yarl) encodes a query value, each with upper- and lower-case hex;
- HTML/XML-escaped: `html.escape` (with `&#x27;`, `&#39;` or `&apos;` for `'`), and
  numeric character references (decimal, `&#x..;` and `&#X..;`) for each markup
  character, and also for each non-ASCII character;
- JSON-escaped: `json.dumps(secret)[1:-1]` with `ensure_ascii` on and off, with `/` as
  `\\/`, with `<>&='` as `\\u003c`-style escapes (Gson, PHP), hex in either case;
- as Python prints it in a log or a traceback (`repr`, `ascii`, the UTF-8 bytes' repr);
- each of these with its whitespace squeezed the way excerpts are (`_clip` in
  `spot.parse`: non-printables become spaces, runs of spaces one).

Fragments: any piece of a spelling at least `FRAGMENT_MIN` (6) characters long is masked
too, wherever it stands (a truncated body ends in a prefix, an excerpt starts in a
suffix). Pieces shorter than that are not: they would match ordinary text. A secret
shorter than `FRAGMENT_MIN` is therefore masked only whole (each spelling whole), and a
secret shorter than `MIN_SECRET` (3) is ignored: it would mask half of every text.
Overlapping and touching hits merge into one `***`, so mixed spellings (`&amp;` for one
character, `&#34;` for the next, `%2b` beside `%2F`) are masked as one as long as each
junction lies inside some listed spelling's 6-character window (true for the mixes the
tests try). What may remain: at most 5 characters of a spelling at a cut or a junction.

What is registered as secret: each feed password and every other `SecretStr` setting
(`register_settings`), and from each Apprise URL (`register_urls`, called by
`notify.load_targets`): the userinfo password, 16+ token runs of host and path (what
`notify.mask_url` masks there), and the query values that are credentials: under a
`+header` / `-param` key, a key naming one (`token`, `key`, `pass`, `secret`, ...), or
token-shaped. Other query values (`to=`, `from=`, `smtp=`) are masked in labels by
`mask_url` but not registered: masking every recipient, host or sender name (`from=SPOT
Alerter` would mask the logger names) everywhere would mangle the logs.

Speed: all spellings' 6-character windows (and the whole spellings of short secrets)
go into one precompiled regex built as a trie, so the longest alternative wins and a
text without any secret costs one `search` (about 10 µs for a log line with 30 secrets
registered; building takes about 10 ms, once per registration batch).

One process-wide registry (`register`, `register_urls`, `register_settings`, `mask`)
serves every output path: the log filter (`MaskingFilter`, installed by
`cli.setup_logging`), `notify.mask_text` (delivery errors), the SPOT client's errors
and the feed errors the watcher stores. Secrets are only ever added (a removed target's
token may still sit in an error in flight).
"""

from __future__ import annotations

import functools
import html
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

__all__ = [
    "FRAGMENT_MIN",
    "MASK",
    "MIN_SECRET",
    "SAFE_QUERY",
    "TOKENISH",
    "Masker",
    "MaskingFilter",
    "Registry",
    "install_log_filter",
    "installed",
    "mask",
    "mask_bytes",
    "register",
    "register_settings",
    "register_urls",
    "spellings",
    "url_secrets",
]

#: What a secret, or a piece of one, is replaced by.
MASK = "***"
#: Secrets shorter than this are ignored (they would mask ordinary text everywhere).
MIN_SECRET = 3
#: The shortest piece of a spelling that is masked on its own; shorter secrets are
#: masked only whole.
FRAGMENT_MIN = 6

#: URL query keys whose values are settings, not secrets or personal data (Apprise's).
SAFE_QUERY = frozenset(
    {
        "format", "overflow", "retry", "wait", "optional", "cto", "rto", "method", "mode",
        "verify", "image", "detect", "silent", "preview", "album", "content", "mdv",
        "priority", "tz", "batch", "avatar", "footer", "emojis", "discovery",
    }
)  # fmt: skip
#: A run that looks like a token (API keys, bot tokens, webhook ids).
TOKENISH = re.compile(r"[A-Za-z0-9_\-:]{16,}")
#: Query keys naming a credential (matched as substrings of the lower-cased key).
_CREDENTIAL_KEYS = (
    "pass", "pwd", "token", "secret", "key", "auth", "sig", "cred", "session", "cookie",
    "bearer", "hook", "private", "access",
)  # fmt: skip

#: The characters a query value keeps unencoded when aiohttp (yarl) sends `params=`.
_YARL_QUERY_SAFE = "/?:@!$'()*,"
_MARKUP = frozenset("&<>\"'")
_HTML_SAFE_JSON = frozenset("<>&='")
_UPPER_PCT = re.compile(r"%[0-9A-F]{2}")
_JSON_U = re.compile(r"\\u[0-9a-f]{4}")


# -- spellings --------------------------------------------------------------------------


def _lower_hex(text: str) -> str:
    return _UPPER_PCT.sub(lambda m: m.group(0).lower(), text)


def _upper_json_hex(text: str) -> str:
    return _JSON_U.sub(lambda m: "\\u" + m.group(0)[2:].upper(), text)


def _refs(secret: str, wanted: Callable[[str], bool]) -> list[str]:
    """The secret with numeric character references for the `wanted` characters."""
    forms: list[Callable[[int], str]] = [
        lambda n: f"&#{n};",
        lambda n: f"&#x{n:x};",
        lambda n: f"&#X{n:X};",
    ]
    return ["".join(form(ord(c)) if wanted(c) else c for c in secret) for form in forms]


def _squeezed(text: str) -> str:
    """Whitespace as an excerpt has it: non-printables as spaces, runs of spaces one."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


@functools.lru_cache(maxsize=256)
def spellings(secret: str) -> frozenset[str]:
    """Every way `secret` may be written in a URL, a body, an error text or a log line."""
    out = {secret}
    for encoded in (
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        quote_plus(secret, safe=_YARL_QUERY_SAFE),
    ):
        out |= {encoded, _lower_hex(encoded)}
    escaped = html.escape(secret)
    out |= {
        escaped,
        escaped.replace("&#x27;", "&#39;"),
        escaped.replace("&#x27;", "&apos;"),
        html.escape(secret, quote=False),
    }
    out.update(_refs(secret, lambda c: c in _MARKUP))
    out.update(_refs(secret, lambda c: c in _MARKUP or ord(c) > 127))
    for ensure_ascii in (False, True):
        dumped = json.dumps(secret, ensure_ascii=ensure_ascii)[1:-1]
        html_safe = "".join(f"\\u{ord(c):04x}" if c in _HTML_SAFE_JSON else c for c in dumped)
        for form in (dumped, html_safe):
            out |= {form, form.replace("/", "\\/"), _upper_json_hex(form)}
    out |= {repr(secret)[1:-1], ascii(secret)[1:-1], repr(secret.encode())[2:-1]}
    out |= {_squeezed(s) for s in out}
    return frozenset(s for s in out if s)


# -- the masker -------------------------------------------------------------------------


_Node = dict[str, "_Node"]


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex matching any of `words`, the longest at each position (a trie: fast)."""
    trie: _Node = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}  # the end of a word

    def emit(node: _Node) -> str:
        alternatives = []
        for ch, child in sorted(node.items()):
            if not ch:
                continue
            # Follow a chain of single children without recursing (long whole secrets).
            run, tail = [re.escape(ch)], child
            while len(tail) == 1 and "" not in tail:
                ((next_ch, tail),) = tail.items()
                run.append(re.escape(next_ch))
            alternatives.append("".join(run) + emit(tail))
        if not alternatives:
            return ""
        body = alternatives[0] if len(alternatives) == 1 else f"(?:{'|'.join(alternatives)})"
        if "" not in node:
            return body
        # Optional and greedy: a longer word through here wins over the one ending here.
        return f"(?:{body})?" if len(alternatives) == 1 else f"{body}?"

    return emit(trie)


class Masker:
    """Masks every spelling of a fixed set of secrets, and any 6-character piece of one."""

    __slots__ = ("_rx", "secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = frozenset(s for s in secrets if len(s) >= MIN_SECRET)
        words: set[str] = set()
        for secret in self.secrets:
            for spelling in spellings(secret):
                if len(secret) < FRAGMENT_MIN or len(spelling) <= FRAGMENT_MIN:
                    words.add(spelling)  # only whole
                else:
                    n = FRAGMENT_MIN
                    words.update(spelling[i : i + n] for i in range(len(spelling) - n + 1))
        self._rx = re.compile(_trie_pattern(words)) if words else None

    def __bool__(self) -> bool:
        return self._rx is not None

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where `text` holds secret material: merged (start, end) ranges, in order."""
        rx = self._rx
        if rx is None:
            return []
        m = rx.search(text)
        if m is None:
            return []
        spans: list[tuple[int, int]] = []
        start, end = m.span()
        pos = start
        # Every later start may extend the run: search again one character on.
        while (m := rx.search(text, pos + 1)) is not None:
            pos = m.start()
            if pos <= end:
                end = max(end, m.end())
            else:
                spans.append((start, end))
                start, end = m.span()
        spans.append((start, end))
        return spans

    def mask(self, text: str) -> str:
        """`text` with every spelling of every secret, and every piece of 6+, as `***`."""
        spans = self.spans(text)
        if not spans:
            return text
        out, last = [], 0
        for start, end in spans:
            out += [text[last:start], MASK]
            last = end
        out.append(text[last:])
        return "".join(out)

    def mask_bytes(self, data: bytes) -> bytes:
        """`mask` for a body: UTF-8 where it is, other bytes kept as they are."""
        if self._rx is None:
            return data
        text = data.decode("utf-8", "surrogateescape")
        masked = self.mask(text)
        return data if masked == text else masked.encode("utf-8", "surrogateescape")


@functools.lru_cache(maxsize=64)
def masker_for(secrets: frozenset[str]) -> Masker:
    """A Masker for a few secrets known at the call site (built once per set)."""
    return Masker(secrets)


# -- what is secret in a URL and in the settings -------------------------------------------


def _is_credential(key: str, value: str) -> bool:
    name = key.lower().lstrip("+-:")
    return (
        key[:1] in "+-"  # headers and query parameters Apprise passes on (json://, form://)
        or any(word in name for word in _CREDENTIAL_KEYS)
        or TOKENISH.fullmatch(value) is not None
    )


def url_secrets(url: str) -> set[str]:
    """The secrets in a URL: the userinfo password, token-like runs in the host and path
    (16+ of `[A-Za-z0-9_-:]`, as `notify.mask_url` masks them), and query values that are
    credentials (named so, token-like, or an Apprise header/parameter `+key`/`-key`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return set(TOKENISH.findall(unquote(url)))
    found: set[str] = set()
    userinfo, at, _host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        found.add(unquote(userinfo.split(":", 1)[1]))
    for run in TOKENISH.findall(unquote(parts.netloc)) + TOKENISH.findall(unquote(parts.path)):
        # `id:token` (Telegram) or `user:password` (Twilio) is one run; each part too.
        found.add(run)
        found.update(part for part in run.split(":") if TOKENISH.fullmatch(part))
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower().lstrip("+-:") in SAFE_QUERY or not _is_credential(key, value):
            continue
        # A URL as a value (a webhook): its own secrets, not "https:" everywhere.
        found.update(url_secrets(value) if "://" in value else {value})
    return {s for s in found if len(s) >= MIN_SECRET}


def _secret_values(obj: object, depth: int = 0) -> Iterator[str]:
    """Every secret value (pydantic `SecretStr`: `get_secret_value`) inside `obj`."""
    reveal = getattr(obj, "get_secret_value", None)
    if callable(reveal):
        value = reveal()
        if isinstance(value, str):
            yield value
        return
    if depth >= 4 or obj is None or isinstance(obj, str | bytes | int | float):
        return
    items: Iterable[object]
    if isinstance(obj, Mapping):
        items = obj.values()
    elif isinstance(obj, list | tuple | set | frozenset):
        items = obj
    else:
        items = getattr(obj, "__dict__", {}).values()  # a pydantic model's fields
    for item in items:
        yield from _secret_values(item, depth + 1)


# -- the process-wide registry ------------------------------------------------------------


class Registry:
    """The secrets known to this process, and the Masker built from them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.masker = Masker()

    @property
    def secrets(self) -> frozenset[str]:
        """Every registered secret."""
        return self.masker.secrets

    def register(self, secrets: Iterable[str | None]) -> None:
        """Add secrets (None, empty and too short ones are skipped); rebuilds once."""
        new = {s for s in secrets if s is not None and len(s) >= MIN_SECRET}
        with self._lock:
            if new <= self.masker.secrets:
                return
            # Replaced whole: readers in other threads see the old or the new one.
            self.masker = Masker(self.masker.secrets | new)


#: The process's registry (tests may swap it for a fresh one).
REGISTRY = Registry()


def register(*secrets: str | None) -> None:
    """Mask these secrets everywhere from now on."""
    REGISTRY.register(secrets)


def register_urls(urls: Iterable[str]) -> None:
    """Mask the secrets of these URLs (Apprise targets) everywhere from now on."""
    REGISTRY.register(s for url in urls for s in url_secrets(url))


def register_settings(settings: object) -> None:
    """Mask every secret of the settings: each feed's password and every other secret
    field (`SecretStr`); a secret URL (a heartbeat) contributes its secrets."""
    found: list[str] = []
    for value in _secret_values(settings):
        found.extend(url_secrets(value) if "://" in value else [value])
    REGISTRY.register(found)


def installed() -> Masker:
    """The registry's current Masker."""
    return REGISTRY.masker


def mask(text: str, *also: str | None) -> str:
    """`text` masked by the registry, and by the secrets `also` (when not registered)."""
    text = REGISTRY.masker.mask(text)
    extra = frozenset(s for s in also if s is not None and len(s) >= MIN_SECRET)
    if extra and not extra <= REGISTRY.masker.secrets:
        text = masker_for(extra).mask(text)
    return text


def mask_bytes(data: bytes, *also: str | None) -> bytes:
    """`mask` for bytes (a response body)."""
    data = REGISTRY.masker.mask_bytes(data)
    extra = frozenset(s for s in also if s is not None and len(s) >= MIN_SECRET)
    if extra and not extra <= REGISTRY.masker.secrets:
        data = masker_for(extra).mask_bytes(data)
    return data


# -- logging ------------------------------------------------------------------------------

_TRACEBACKS = logging.Formatter()


class MaskingFilter(logging.Filter):
    """Masks a record in place before its handler formats it: the message (arguments
    merged in), the exception text (the traceback, formatted here; `exc_info` is then
    dropped so no later formatter prints it in clear) and the stack. Install it on the
    handler (`install_log_filter`): a filter on the root logger misses propagated records.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask; never drops a record."""
        masker = REGISTRY.masker
        if not masker:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a format/arguments mismatch: keep both, masked
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = masker.mask(message), None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _TRACEBACKS.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = masker.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = masker.mask(record.stack_info)
        return True


def install_log_filter(handler: logging.Handler) -> None:
    """Mask every record `handler` emits (once, however often called)."""
    if not any(isinstance(f, MaskingFilter) for f in handler.filters):
        handler.addFilter(MaskingFilter())
