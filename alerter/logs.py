"""How a log record is written: text for a terminal, text for journald, or JSON lines.

One record is always one event: in JSON every newline is escaped by `json.dumps`; under
journald (stderr connected to the journal, `JOURNAL_STREAM`) a multi-line message or a
traceback has its line breaks shown as ` ⏎ ` so the journal keeps it as ONE entry, and
the line starts with the sd-daemon(3) priority prefix (`<3>` error, `<4>` warning, `<6>`
info, `<7>` debug) so `journalctl -p warning` works. On a terminal, text keeps its line
breaks and its timestamp (journald stamps entries itself, so it gets none).

Every handler made here masks secrets first (`alerter.masking`): handler filters run
before the formatter, so the JSON never sees a secret in clear.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Mapping
from typing import Literal, TextIO

from alerter import masking

__all__ = [
    "LINE_BREAK",
    "Format",
    "JsonFormatter",
    "TextFormatter",
    "journal_prefix",
    "make_handler",
    "under_journald",
]

#: The log formats `ALERTER_LOG_FORMAT` names.
#: The formats `ALERTER_LOG_FORMAT` names.
Format = Literal["text", "json"]

#: What a line break inside one record becomes under journald (visible, one entry).
LINE_BREAK = " ⏎ "
#: The terminal's text format (as before: local time, level, logger, message).
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: Under journald: the journal has the time and the priority already.
JOURNAL_TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"


def journal_prefix(levelno: int) -> str:
    """The sd-daemon(3) priority prefix for a logging level (`<3>` error ... `<7>` debug)."""
    if levelno >= logging.CRITICAL:
        return "<2>"
    if levelno >= logging.ERROR:
        return "<3>"
    if levelno >= logging.WARNING:
        return "<4>"
    if levelno >= logging.INFO:
        return "<6>"
    return "<7>"


def under_journald(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when `stream` is the journal's stream: `JOURNAL_STREAM` is set and names this
    stream's device and inode (systemd.exec(5): a child that inherited the variable but
    writes elsewhere must not use the journal's conventions)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file behind it (a StringIO)
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class TextFormatter(logging.Formatter):
    """Text; under journald one line per record with its priority prefix."""

    def __init__(self, *, journal: bool = False) -> None:
        super().__init__(JOURNAL_TEXT_FORMAT if journal else TEXT_FORMAT)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        """The record as text (with its traceback); under journald one prefixed line."""
        text = super().format(record)
        if not self.journal:
            return text
        return journal_prefix(record.levelno) + LINE_BREAK.join(text.splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, and
    `exc_info` / `stack_info` (text) when present; prefixed for journald when told."""

    def __init__(self, *, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        at = dt.datetime.fromtimestamp(record.created, dt.UTC)
        obj: dict[str, str] = {
            "time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # The masking filter has already turned exc_info into masked exc_text.
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            obj["exc_info"] = record.exc_text
        if record.stack_info:
            obj["stack_info"] = self.formatStack(record.stack_info)
        line = json.dumps(obj, ensure_ascii=False)
        return journal_prefix(record.levelno) + line if self.journal else line


def make_handler(
    stream: TextIO, fmt: Format = "text", environ: Mapping[str, str] | None = None
) -> logging.Handler:
    """A handler writing to `stream` in `fmt`, journald-aware, masking every record."""
    journal = under_journald(stream, environ)
    handler = logging.StreamHandler(stream)
    formatter: logging.Formatter = (
        JsonFormatter(journal=journal) if fmt == "json" else TextFormatter(journal=journal)
    )
    handler.setFormatter(formatter)
    masking.install_log_filter(handler)
    return handler
