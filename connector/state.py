"""The store: SQLite in WAL mode, one file, versioned migrations.

Holds cursors, the identity map, delivered-payload hashes, the encrypted outbox, dead letters,
the suppression list, run history and the audit chain. Nothing in it is personal data in
clear: subjects are keyed HMAC ids, payloads are AES-GCM sealed by :mod:`connector.crypto`.

Every method that changes several tables does so in one transaction, which is what makes a
crash at any point lose nothing: a page's outbox rows and the cursor after it commit together;
an acknowledgement's hash, identity and outbox deletion commit together.

:class:`Store` is made of one part per concern, each a module of its own:

- :mod:`connector.store_base`: the connection, migrations, transactions, shared helpers
- :mod:`connector.store_subjects`: subject numbers and the identity map
- :mod:`connector.store_runs`: cursors, run history, the reads ``status`` shows
- :mod:`connector.store_outbox`: the outbox (a page's commit, batches, held rows)
- :mod:`connector.store_delivered`: acknowledgements, delivered hashes, field sets
- :mod:`connector.store_dead_letters`: dead letters
- :mod:`connector.store_suppression`: the suppression list
- :mod:`connector.store_consent`: opt-outs and consent events at a system
- :mod:`connector.store_marks` and :mod:`connector.store_records`: hash marks, records

Callers import from here. A test that patches a name the store looks up (``utcnow``,
``sqlite3``, ``statements``, a limit) patches it in the module that looks it up: a patch of
the name re-exported here reaches nothing.
"""

from __future__ import annotations

# Read by tests, and not in __all__: re-exported by name.
from connector.store_base import AUTOCHECKPOINT_PAGES as AUTOCHECKPOINT_PAGES
from connector.store_base import BACKGROUND_BOUND_PAGES as BACKGROUND_BOUND_PAGES
from connector.store_base import chunks, rows_in, utcnow
from connector.store_consent import ConsentStore
from connector.store_dead_letters import DeadLetterStore
from connector.store_delivered import DeliveredStore
from connector.store_marks import HELD, RESEND, UNSURE, WITHDRAWAL, before_resend, landed_unsure
from connector.store_outbox import OutboxStore
from connector.store_records import Ack, DeadLetter, OutboxRow, PageLetter, QueuedPayload
from connector.store_runs import RunStore, latest_runs, latest_success, table_counts
from connector.store_subjects import PER_SYSTEM_TABLES, SubjectStore
from connector.store_suppression import HELD_PHONE, SuppressionStore

__all__ = [
    "HELD",
    "HELD_PHONE",
    "PER_SYSTEM_TABLES",
    "RESEND",
    "UNSURE",
    "WITHDRAWAL",
    "Ack",
    "DeadLetter",
    "OutboxRow",
    "PageLetter",
    "QueuedPayload",
    "Store",
    "before_resend",
    "chunks",
    "landed_unsure",
    "latest_runs",
    "latest_success",
    "rows_in",
    "table_counts",
    "utcnow",
]


class Store(
    OutboxStore,
    DeliveredStore,
    DeadLetterStore,
    ConsentStore,
    SuppressionStore,
    SubjectStore,
    RunStore,
):
    """The SQLite store. One connection; callers stay on one thread (the event loop's).

    Its methods are the parts' own (inherited, so a call is a plain method call: the engine
    makes several per record).

    Args:
        path: database file; its folder is created if missing.

    Raises:
        StorePathError: no store can be at ``path`` (a folder; a folder that cannot be made).
        StoreError: the file there is not a klantsync store, is damaged, or is newer.
    """
