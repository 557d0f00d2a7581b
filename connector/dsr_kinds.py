"""The work of each request kind (erase, access, rectify), run and resumed by the service.

Every step records its outcome per system before the next one starts, so a request killed at
any point resumes on retry: systems already final are skipped, ``in_progress`` ones are run
again (every adapter verb used here is idempotent), and the sealed manifest taken before the
first deletion still names every system's ids.
"""

from __future__ import annotations

from typing import Any

from connector.access import BUNDLE_FILES
from connector.dsr_access import AccessSteps

# Still reached here, where an access copy's tenures were worked out before each kind had a
# module of its own.
from connector.dsr_access import _Tenure as _Tenure
from connector.dsr_erase import EraseSteps
from connector.dsr_rectify import RectifySteps
from connector.dsr_store import RequestRow, SystemRow
from connector.retention import count_bundles_of
from connector.wording import counted

__all__ = ["KindRunner"]

#: What an erasure keeps of the person, in its receipt's words (:meth:`KindRunner._kept`).
_KEPT_SUPPRESSION = (
    "suppression entry (keyed hash of the subject, no e-mail) so no sync re-creates the person"
)
_KEPT_AUDIT = "audit entries (keyed hash ids only)"


class KindRunner(EraseSteps, AccessSteps, RectifySteps):
    """Runs the per-system work of a request and builds its receipt body.

    Args:
        service: the service whose store, runtime and clock it uses.
    """

    async def run(self, row: RequestRow) -> None:
        """Do what is left of ``row`` (an open request).

        Raises:
            StaleRunError: another process changed the request while this run worked on it;
                the run stopped before writing over that, and a retry carries on from it.
        """
        self._held[row.id] = row.manifest
        self._reads[row.id] = {}
        try:
            if row.kind == "erase":
                await self._erase(row)
                self._clear_the_log()
            elif row.kind == "access":
                await self._access(row)
            elif row.kind == "rectify":
                await self._rectify(row)
            else:  # pragma: no cover - kinds come from this module's own writers
                raise ValueError(f"unknown request kind {row.kind!r}")
        finally:
            self._held.pop(row.id, None)
            self._reads.pop(row.id, None)

    def _clear_the_log(self) -> None:
        """Truncate the store's write-ahead log after an erasure's run: :meth:`Store.truncate_log`.

        The store zeroes the pages the erasure's deletes free, but the log keeps the frames
        that wrote what was deleted (the person's sealed payloads, which the store's keys
        still open): a checkpoint copies the log back and starts it again from its beginning
        without clearing it, and the daemon's connection, open for months, never deletes it.
        A reader in the log (a command beside the daemon) keeps it from being cleared now:
        the store then tries again (its background checkpointer, its closing).
        """
        self.rt.store.truncate_log()

    def receipt(self, row: RequestRow, systems: list[SystemRow]) -> dict[str, Any]:
        """The receipt body (signed by the caller): per-system outcomes, no personal data."""
        connector: dict[str, Any]
        if row.kind == "erase":
            # An access bundle the erasure's last step (delete_bundles, just before with no
            # wait between) could not delete (its folder's permissions) is still on disk:
            # said so, not listed among what went.
            left = count_bundles_of(self.rt.store, self.rt.keyring, self._erased_ids(row))
            deleted = [
                "identity map rows",
                "delivered hashes",
                "outbox rows",
                "dead letters",
                "queued syncs of the person (webhook changes, resyncs)",
            ]
            kept = self._kept(row)
            if left:
                bundles = counted(left, "access bundle")
                kept = (
                    f"{kept}; {bundles} the erasure could not delete, which the retention "
                    "sweep deletes when due"
                )
            else:
                deleted.append("access bundles written for the person")
            connector = {"deleted": [*deleted, "erasure manifest"], "kept": kept}
        elif row.kind == "access":
            erased_by = self.service.open_manifest(row).get("erased_by") if row.manifest else None
            connector = {
                "bundle_files": list(BUNDLE_FILES),
                "note": "the access bundle is the only place klantsync wrote personal data in "
                "clear; the request's sealed copy of the e-mail is destroyed",
            }
            if erased_by:
                connector = {
                    "bundle_files": [],
                    "note": f"no access bundle was written: the person's erasure "
                    f"({', '.join(erased_by)}) completed while this request was open, and "
                    "what it would have copied was erased with it; the request's sealed copy "
                    "of the e-mail is destroyed",
                }
        else:
            # Said only where there is one: a note about a source nobody configured made the
            # reader look for a step to correct by hand that is not there.
            read_only = self._read_only_sources()
            connector = {}
            if read_only:
                connector = {
                    "note": f"a source klantsync only reads ({', '.join(read_only)}) keeps its "
                    "values: a system marked skipped there must be corrected by hand, or its "
                    "next change sends them again"
                }
        body: dict[str, Any] = {
            "version": 1,
            "request_id": row.id,
            "kind": row.kind,
            "subject_id": row.subject_id,
            "source": row.source,
            "received_at": row.received_at,
            "deadline": row.deadline,
            # Why a deadline is past the month (Art. 12(3)): without it, the proof of an
            # answer within an extended deadline leant on an audit trail it does not carry.
            "extension_reason": row.extension_reason,
            "issued_by": "klantsync",
            "systems": [
                {
                    "system": s.system,
                    # A system taken out of the config since (its part exempted) has none.
                    "adapter": (
                        self.rt.systems[s.system].settings.adapter
                        if s.system in self.rt.systems
                        else "no longer configured"
                    ),
                    "status": s.status,
                    "attempts": s.attempts,
                    "detail": s.detail or "",
                    **s.result,
                }
                for s in systems
            ],
            "connector": connector,
        }
        superseded_by = sorted(
            {str(s.result["superseded_by"]) for s in systems if s.result.get("superseded_by")}
        )
        if superseded_by:
            # A correction the person's erasure closed: which erasure, by its id.
            body["superseded_by"] = superseded_by[0]
        return body

    def _kept(self, row: RequestRow) -> str:
        """What an erasure keeps of the person, for its receipt: the suppression entry, the
        keyed ids of the systems' records it erased (noted by each run, kept
        ``webhook_ids_days`` to know a system's report of the deletion for this erasure's
        echo, :meth:`DsrService.echo_of_own_erasure`), and the audit entries. The person is
        told all of it; the record ids used to go unsaid."""
        parts = [_KEPT_SUPPRESSION]
        records = self.db.erased_records_of(row.id)
        if records:
            days = self.rt.config.retention.webhook_ids_days
            erased = counted(records, "system record")
            parts.append(
                f"keyed hashes of the ids of the {erased} erased (no id in clear), for "
                f"{days} days, so a system's report of this erasure is not taken for a new "
                "request"
            )
        parts.append(_KEPT_AUDIT)
        return "; ".join(parts)
