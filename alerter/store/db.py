"""The SQLite database under the store: one connection, migrations, transactions, meta.

One connection, WAL, versioned migrations (`PRAGMA user_version`). Every write that
belongs together is one transaction. `synchronous=NORMAL` under WAL survives a killed
process; a power cut may lose the last commits, which the next poll re-reads from SPOT
(it keeps 7 days) and re-processes.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from alerter.errors import StoreError

_MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE feeds (
        feed_id TEXT PRIMARY KEY,
        name TEXT,
        last_request REAL,
        last_success REAL,
        last_failure REAL,
        failures INTEGER NOT NULL DEFAULT 0,
        error_kind TEXT,
        last_error TEXT,
        not_before REAL,
        synced_at REAL,
        watched_since REAL,
        told TEXT NOT NULL DEFAULT 'ok'
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        feed_id TEXT NOT NULL,
        messenger_id TEXT NOT NULL,
        messenger_name TEXT NOT NULL,
        unix_time INTEGER NOT NULL,
        type TEXT NOT NULL,
        latitude REAL,
        longitude REAL,
        altitude INTEGER,
        model_id TEXT,
        battery TEXT,
        content TEXT,
        date_time TEXT,
        extra TEXT NOT NULL DEFAULT '{}',
        received_at REAL NOT NULL,
        initial INTEGER NOT NULL DEFAULT 0,
        processed_at REAL
    );
    CREATE INDEX messages_pending ON messages(unix_time) WHERE processed_at IS NULL;
    CREATE INDEX messages_device_time ON messages(messenger_id, unix_time);
    CREATE INDEX messages_feed ON messages(feed_id);
    CREATE TABLE devices (
        messenger_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        feed_id TEXT NOT NULL,
        last_message_id INTEGER,
        last_time INTEGER,
        recent_times TEXT NOT NULL DEFAULT '[]',
        last_by_type TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        device_id TEXT NOT NULL,
        rule TEXT NOT NULL,
        state TEXT NOT NULL,
        started_at REAL NOT NULL,
        opened_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        first_message_id INTEGER,
        last_message_id INTEGER,
        last_notified_at REAL,
        reminders INTEGER NOT NULL DEFAULT 0,
        updates INTEGER NOT NULL DEFAULT 0,
        escalation INTEGER NOT NULL DEFAULT 0,
        late INTEGER NOT NULL DEFAULT 0,
        resolved_at REAL,
        resolved_by_message_id INTEGER
    );
    CREATE UNIQUE INDEX incidents_one_open ON incidents(device_id, rule)
        WHERE state != 'resolved';
    CREATE INDEX incidents_resolved ON incidents(resolved_at);
    CREATE TABLE incident_events (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents(id),
        at REAL NOT NULL,
        reason TEXT NOT NULL,
        message_id INTEGER,
        notified INTEGER NOT NULL
    );
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER REFERENCES incidents(id),
        created_at REAL NOT NULL,
        kind TEXT NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        short TEXT NOT NULL,
        severity TEXT NOT NULL,
        resolution INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        notification_id INTEGER NOT NULL REFERENCES notifications(id),
        target TEXT NOT NULL,
        label TEXT NOT NULL,
        short INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL,
        last_error TEXT,
        sent_at REAL
    );
    CREATE INDEX deliveries_pending ON deliveries(next_attempt) WHERE state = 'pending';
    CREATE TABLE targets (
        target TEXT PRIMARY KEY,
        label TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        failing_since REAL,
        told INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: why a decision paged nobody.
    """
    ALTER TABLE incident_events ADD COLUMN held_back TEXT;
    """,
    # 3: why a message was set aside (it could not be decided); the rest went on.
    """
    ALTER TABLE messages ADD COLUMN set_aside TEXT;
    """,
    # 4: who took an incident (acknowledged it), when, and how (`cli`, `web:TAG`).
    """
    ALTER TABLE incidents ADD COLUMN acknowledged_by TEXT;
    ALTER TABLE incidents ADD COLUMN acknowledged_at REAL;
    ALTER TABLE incidents ADD COLUMN acknowledged_via TEXT;
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)


class Database:
    """The connection and what every part of the store shares."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path, *, migrate: bool = True) -> Self:
        """Open (creating, 0700 directory) and migrate the database at `path`. With
        `migrate=False` (the read-only commands) an older schema is refused instead: a
        new version's `status` must not migrate the live database under the old service."""
        conn: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not path.exists()
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            if fresh:
                os.chmod(path, 0o600)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            store = cls(conn, path)
            store._migrate(apply=migrate)
        except (sqlite3.Error, OSError, StoreError) as exc:
            # A refused database (e.g. a newer schema) must not leave its connection open.
            if conn is not None:
                conn.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open the state database {path}: {exc}") from exc
        return store

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def _migrate(self, *, apply: bool = True) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema {version}, newer than this version knows "
                f"({SCHEMA_VERSION}); upgrade spot-alerter"
            )
        if not apply and 0 < version < SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema {version}, older than this version's "
                f"({SCHEMA_VERSION}): `alerter run` of this version migrates it when it "
                "starts; nothing was changed"
            )
        for number in range(version, SCHEMA_VERSION):
            # One script, one transaction: a migration applies whole or not at all.
            self.conn.executescript(
                "BEGIN IMMEDIATE;"
                + _MIGRATIONS[number]
                + f"; PRAGMA user_version={number + 1}; COMMIT;"
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write; sqlite3 errors become StoreError."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"state database write failed: {exc}") from exc

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"state database read failed: {exc}") from exc

    # -- meta ---------------------------------------------------------------

    def probe_write(self, at: float) -> None:
        """Write and commit a small value: StoreError when the disk refuses."""
        self.set_meta("probe", repr(at))

    def get_meta(self, key: str) -> str | None:
        """A stored service-level value."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a service-level value."""
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def delete_meta(self, key: str) -> None:
        """Forget a service-level value."""
        with self.transaction() as c:
            c.execute("DELETE FROM meta WHERE key = ?", (key,))

    def backup(self, path: Path, *, replace: bool = False) -> tuple[int, str, int]:
        """Copy the database to `path` with SQLite's online backup API, then check the copy.

        Safe while `alerter run` writes (it takes no lock of the service's): the copy is
        one read snapshot (WAL), taken in one step. It is written to a private (0600)
        file beside `path`, turned into a self-contained file (no -wal to carry along),
        synced, checked, and only then put at `path`: an existing `path` is kept unless
        `replace` (StoreError), and a copy that fails its check never lands there.
        Returns the copy's size in bytes, `PRAGMA integrity_check`'s answer ("ok") and
        its schema version.
        """
        target = path.absolute()
        live = self.path.resolve()
        if target.resolve() in {live, live.with_name(live.name + "-wal"),
                                live.with_name(live.name + "-shm")}:  # fmt: skip
            raise StoreError(f"{path} is the state database itself")
        if target.exists() and not replace:
            raise StoreError(f"{path} exists; not replaced")
        try:
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)  # mkstemp: created 0600, a name nobody else has
            tmp = Path(name)
            try:
                copy = sqlite3.connect(tmp, isolation_level=None)
                try:
                    self.conn.backup(copy)  # pages=-1: the whole file from one snapshot
                    copy.execute("PRAGMA journal_mode=DELETE")
                finally:
                    copy.close()
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                check = sqlite3.connect(f"{tmp.as_uri()}?mode=ro", uri=True)
                try:
                    integrity = "; ".join(
                        str(r[0]) for r in check.execute("PRAGMA integrity_check").fetchall()
                    )
                    version = int(check.execute("PRAGMA user_version").fetchone()[0])
                finally:
                    check.close()
                expected = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
                if integrity != "ok" or version != expected:
                    raise StoreError(
                        f"the copy failed its check (integrity: {integrity}; schema {version}, "
                        f"expected {expected}); {path} was not written"
                    )
                if replace:
                    os.replace(tmp, target)
                else:
                    try:
                        os.link(tmp, target)  # atomic: fails when `path` appeared meanwhile
                    except FileExistsError:
                        raise
                    except OSError:  # a file system without hard links (network, FAT)
                        if target.exists():
                            raise FileExistsError(target) from None
                        os.replace(tmp, target)
                dir_fd = os.open(target.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            finally:
                tmp.unlink(missing_ok=True)
        except FileExistsError:
            raise StoreError(f"{path} exists; not replaced") from None
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"backup to {path} failed: {exc}") from exc
        return target.stat().st_size, integrity, version
