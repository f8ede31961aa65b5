"""The SQLite state, split by what it keeps; one connection, one `Store`.

- `db`: the connection, migrations, transactions and service-level values (meta);
- `archive`: feeds, every message (SPOT forgets after 7 days; this does not), devices;
- `incidents`: incidents, their history, and `commit_evaluation`: the engine's decisions,
  the messages' processed marks and the outbox rows commit together or not at all, so a
  crash at any point re-evaluates exactly what was not committed;
- `outbox`: notifications, deliveries and target health.

The store persists what the pure steps computed; it decides nothing.
"""

from __future__ import annotations

from alerter.store.archive import Archive
from alerter.store.db import SCHEMA_VERSION
from alerter.store.incidents import Incidents
from alerter.store.outbox import Outbox

__all__ = ["SCHEMA_VERSION", "Store"]


class Store(Archive, Incidents, Outbox):
    """The service's SQLite database."""
