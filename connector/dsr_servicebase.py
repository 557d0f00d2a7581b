"""What every part of :class:`connector.dsr.DsrService` shares: its state and small helpers.

The service inherits its separable concerns from parts of their own: recording an erasure
and the requests webhooks ask for (:mod:`connector.dsr_events`), an operator's decisions
(:mod:`connector.dsr_admin`), the receipt keys (:mod:`connector.dsr_receipt_keys`) and the
corrections an erasure supersedes (:mod:`connector.dsr_supersede`). :class:`ServiceBase`
declares what they read of the service, holds its manifests, audit entries and views, and
declares, for the type checker only, what they call of its core (:mod:`connector.dsr`) or
of one another.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector import audit
from connector.crypto import manifest_context
from connector.dsr_store import DsrStore, RequestRow
from connector.dsr_views import DsrError, DsrUsageError, RequestView, make_view, system_views
from connector.requestids import KIND_PREFIXES, PREFIX

if TYPE_CHECKING:
    from connector.dsr_kinds import KindRunner
    from connector.receipts import ReceiptSigner
    from connector.runtime import Runtime

__all__ = ["PREFIX", "ServiceBase", "iso", "no_request", "with_changes"]

#: A request id as :meth:`DsrService._new_row` makes them: the kind's prefix, the day the
#: request was received and eight hex digits.
_REQUEST_ID = re.compile(rf"(?:{KIND_PREFIXES})-[0-9]{{8}}-[0-9a-f]{{8}}")


def no_request(request_id: str) -> DsrUsageError:
    """The refusal of an id no request has, repeating it only if it has a request id's form.

    What is typed where an id belongs may be anything, a person's e-mail address first of
    all (``dsr show jan@...``, looking their request up by them): repeated, it went to
    stderr (the journal, a CI log) or into the JSON answer a script keeps, and errors carry
    no personal data. Said instead: what an id looks like, and where to find them.
    """
    if _REQUEST_ID.fullmatch(request_id):
        return DsrUsageError(f"no request {request_id!r}")
    return DsrUsageError(
        "that is not a request id (not repeated here: it may be personal data); a request "
        "id looks like er-20260105-0a1b2c3d (ac- for access, rc- for rectification), as "
        "dsr list shows them"
    )


def iso(moment: dt.datetime) -> str:
    """``moment`` as the store keeps times: UTC, to the second."""
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def with_changes(row: RequestRow, **changes: Any) -> RequestRow:
    """A copy of ``row`` with ``changes`` (a new request's row with its sealed manifest)."""
    return replace(row, **changes)


class ServiceBase:
    """The service's state and the helpers each of its parts uses (set by
    :class:`connector.dsr.DsrService`, which documents them)."""

    rt: Runtime
    db: DsrStore
    now: Callable[[], dt.datetime]
    received_at: dt.datetime | None
    due_within: dt.timedelta | None
    signer: ReceiptSigner
    kinds: KindRunner

    def identities(self, subject_id: str) -> dict[str, str]:
        """System name -> that system's id for the subject, as the system knows it."""
        return self.rt.engine.ids.all_from_store(self.db.identities(subject_id))

    def seal_manifest(self, request_id: str, value: dict[str, Any]) -> bytes:
        return self.rt.keyring.seal_json(value, manifest_context(request_id))

    def open_manifest(self, row: RequestRow) -> dict[str, Any]:
        if row.manifest is None:
            raise DsrError(f"request {row.id}: its sealed manifest is gone; cannot resume")
        value: dict[str, Any] = self.rt.keyring.open_json(row.manifest, manifest_context(row.id))
        return value

    def audit(self, kind: str, row: RequestRow, **data: Any) -> None:
        """An audit entry about a request: ids, statuses and counts only."""
        audit.append(
            self.rt.store, kind, {"request": row.id, "kind": row.kind, **data}, row.subject_id
        )

    def timestamp(self) -> str:
        return iso(self.now())

    def _view(self, row: RequestRow | None) -> RequestView:
        assert row is not None
        return make_view(row, system_views(self.db.systems(row.id)), self.now())

    if TYPE_CHECKING:
        # Defined by the service's core (connector/dsr.py).

        async def erase(
            self,
            email: str | None = None,
            *,
            phone: str | None = None,
            external: tuple[str, str] | None = None,
            source: str = "cli",
        ) -> RequestView: ...

        async def access(
            self,
            email: str,
            out_dir: Path | None = None,
            *,
            source: str = "cli",
            also: str | None = None,
        ) -> RequestView: ...

        async def _resolve_email(
            self, ids: dict[str, str], subject_id: str | None, *, first: str
        ) -> str | None: ...

        def _opened_before(self, kind: str, subject_id: str, source: str) -> RequestRow | None: ...

        def _new_row(self, kind: str, subject_id: str, source: str) -> RequestRow: ...

        def _keep_earlier_deadline(self, row: RequestRow, source: str) -> None: ...

        def _due_within(self) -> dict[str, int]: ...

        def _complete_if_done(self, row: RequestRow) -> None: ...

        # Defined by connector/dsr_supersede.py, called by connector/dsr_events.py.

        def supersede_corrections(
            self, erasure: RequestRow, subject_ids: Sequence[str]
        ) -> None: ...
