"""Acknowledgement links: signed tokens, the names people give, what acknowledging did.

Pure, apart from `load_key` (which reads, or creates once, the key in the state dir).

A token names one incident and one recipient tag, and proves that this service made it:

    token = base64url(payload + MAC), no padding
    payload = b"ID:TAG"                       (ASCII digits, a colon, the tag in UTF-8)
    MAC = HMAC-SHA256(key, DOMAIN + payload), first 16 bytes (128 bits)

No randomness: the same incident and tag always give the same token, so every alert of
an incident to one tag carries the same link. Unguessable without the key (the MAC);
`verify` compares MACs in constant time and accepts only the canonical spelling, so a
token altered in any character (even in base64's unused low bits) is refused. The key
is `ALERTER_SECRET_KEY`, else 32 random bytes generated once into `STATE_DIR/ack.key`
(0600, created atomically, read back on later starts). It never appears in any output:
nothing here prints, logs or puts it in an error.

A token for a resolved incident is spent (`incident_for_token` returns None); for an
acknowledged one it still leads to the incident, so the page can say who took it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from alerter.errors import ConfigError, Problem, StoreError
from alerter.models import Incident, IncidentState

log = logging.getLogger("alerter.ack")

#: The generated key's file, in the state directory.
KEY_FILE = "ack.key"
#: Bytes of a generated key.
KEY_BYTES = 32
#: The shortest `ALERTER_SECRET_KEY` accepted (characters).
MIN_SECRET_KEY = 16
#: Bytes of a token's MAC (128 bits).
MAC_BYTES = 16
#: A longer token is refused before any decoding.
MAX_TOKEN = 400
#: The longest name kept (characters, after cleaning).
NAME_MAX = 60
#: What a MAC is computed over, besides the payload: a MAC for anything else never fits.
DOMAIN = b"spot-alerter ack v1\x00"


# -- the key ---------------------------------------------------------------------------


def load_key(secret_key: SecretStr | None, state_dir: Path) -> bytes:
    """The signing key: `ALERTER_SECRET_KEY` (at least 16 characters), else the key in
    `state_dir/ack.key`, generated there once (32 random bytes, 0600, atomically: two
    processes starting together end up with the same key)."""
    if secret_key is not None:
        value = secret_key.get_secret_value()
        if len(value) < MIN_SECRET_KEY:
            raise ConfigError(
                [
                    Problem(
                        "ALERTER_SECRET_KEY",
                        None,
                        f"too short to sign acknowledgement links (at least {MIN_SECRET_KEY} "
                        "characters; unset it and one is generated into the state directory)",
                    )
                ]
            )
        return value.encode()
    path = state_dir / KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(prefix=f".{KEY_FILE}.", suffix=".tmp", dir=state_dir)
        tmp = Path(name)  # mkstemp: 0600, a name nobody else has
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic, and never replaces a key made meanwhile
            except FileExistsError:
                pass  # another process made one first: use theirs
            except OSError:  # a file system without hard links
                if not path.exists():
                    os.replace(tmp, path)
            _sync_dir(state_dir)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the acknowledgement key {path}: {exc.strerror or exc}"
        ) from None
    log.info("generated the acknowledgement key %s", path)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    """The key file's bytes; FileNotFoundError when there is none."""
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(KEY_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StoreError(
            f"cannot read the acknowledgement key {path}: {exc.strerror or exc}"
        ) from None
    if len(data) != KEY_BYTES:
        raise StoreError(
            f"the acknowledgement key {path} is damaged ({len(data)} bytes, expected "
            f"{KEY_BYTES}); delete it to generate a new one (links already sent stop working)"
        )
    if mode & 0o077:
        log.warning("the acknowledgement key %s is readable by others; chmod 600 it", path)
    return data


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- tokens ----------------------------------------------------------------------------


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, DOMAIN + payload, hashlib.sha256).digest()[:MAC_BYTES]


def make_token(key: bytes, incident_id: int, tag: str) -> str:
    """The token for one incident and one recipient tag."""
    if incident_id < 0 or not tag:
        raise ValueError("a token needs an incident id (>= 0) and a tag")
    payload = f"{incident_id}:{tag}".encode()
    return base64.urlsafe_b64encode(payload + _mac(key, payload)).rstrip(b"=").decode("ascii")


def verify(key: bytes, token: str) -> tuple[int, str] | None:
    """(incident id, tag) of a token this key made; None for anything else (forged,
    altered, truncated, another key's). The MAC is compared in constant time."""
    if not token or len(token) > MAX_TOKEN or not token.isascii():
        return None
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    # One spelling per token: base64's unused low bits, padding or stray characters
    # would otherwise let an altered token decode to the same bytes.
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != token:
        return None
    payload, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
    if len(data) <= MAC_BYTES or not hmac.compare_digest(mac, _mac(key, payload)):
        return None
    number, sep, tag = payload.partition(b":")
    if not sep or not tag or not number.isdigit():
        return None
    try:
        return int(number), tag.decode()
    except UnicodeDecodeError:
        return None


def ack_url(public_url: str, key: bytes, incident_id: int, tag: str) -> str:
    """`{public_url}/ack/{token}`."""
    return f"{public_url.rstrip('/')}/ack/{make_token(key, incident_id, tag)}"


class IncidentLookup(Protocol):
    """What `incident_for_token` needs of the store (`Store.incident`)."""

    def incident(self, incident_id: int) -> Incident | None:
        """One incident by id, whatever its state; None when there is none."""
        ...


def incident_for_token(
    key: bytes, token: str, incidents: IncidentLookup
) -> tuple[Incident, str] | None:
    """(the incident, the token's tag) when the token is valid and its incident not
    resolved (open, or acknowledged: the page says who took it); None otherwise (404)."""
    found = verify(key, token)
    if found is None:
        return None
    incident_id, tag = found
    inc = incidents.incident(incident_id)
    if inc is None or inc.state is IncidentState.RESOLVED:
        return None
    return inc, tag


# -- names and outcomes ----------------------------------------------------------------


def clean_name(raw: str) -> str | None:
    """The name someone gave, fit for a title: control and invisible characters removed,
    white space collapsed, at most `NAME_MAX` characters; None when nothing is left."""
    text = unicodedata.normalize("NFC", raw)
    kept = "".join(
        " " if c.isspace() else c for c in text if c.isspace() or unicodedata.category(c)[0] != "C"
    )
    name = " ".join(kept.split())[:NAME_MAX].rstrip()
    return name or None


class AckStatus(StrEnum):
    """What an acknowledgement did."""

    ACKNOWLEDGED = "acknowledged"  # taken now; everyone it reached is being told
    ALREADY = "already acknowledged"  # someone took it before: nothing changed
    NOT_OPEN = "not open"  # resolved, or no such incident: nothing changed


@dataclass(frozen=True, slots=True)
class AckOutcome:
    """The result of `Processor.acknowledge`."""

    status: AckStatus
    incident: Incident | None  # as it stands now; None: no such incident
    notified: int = 0  # targets the `Acknowledged` notification was queued for

    @property
    def by(self) -> str | None:
        """Who took the incident (now, or before)."""
        return self.incident.acknowledged_by if self.incident else None

    @property
    def at(self) -> float | None:
        """When it was taken."""
        return self.incident.acknowledged_at if self.incident else None


#: How the web page acknowledges: `(incident id, name, via) -> AckOutcome`
#: (the composition root hands it `Processor.acknowledge`).
Acknowledge = Callable[[int, str, str], AckOutcome]
