"""Rules the random-order models share: the connector's store backed up, and restored.

A model that inherits them provides ``directory`` (a scratch folder), ``rt`` (the open
runtime), ``_open()`` and ``_close()``. Every invariant of the model must go on holding
after a restore, as after any other step: what happened since the backup (erasures, moves,
who was sent where, open requests) is not undone.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from connector.backup import take_backup
from connector.restore import restore_backup
from connector.runtime import Runtime

__all__ = ["StoreBackups"]


class StoreBackups(RuleBasedStateMachine):
    directory: Path
    rt: Runtime

    def __init__(self) -> None:
        super().__init__()
        #: The last backup taken of the store, if any.
        self.backup: Path | None = None
        self.backups = 0

    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    @rule()
    def the_store_is_backed_up(self) -> None:
        self.backups += 1
        self.backup = self.directory / f"backup-{self.backups}.db"
        take_backup(self.rt.config, self.backup)

    @precondition(lambda self: self.backup is not None)
    @rule()
    def the_store_is_restored_from_the_last_backup(self) -> None:
        assert self.backup is not None
        self._close()
        restore_backup(self.rt.config, self.backup)
        self._open()
