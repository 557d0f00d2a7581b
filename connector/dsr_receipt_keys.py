"""The receipts' signing keys: a completed request's receipt, the public keys a third party
checks receipts with, their verification and the key's rotation.

A rotated key is kept with the moment it was retired, so receipts outlive key rotations and
a retired key verifies nothing signed after it (:class:`connector.receipts.ReceiptSigner`).
"""

from __future__ import annotations

from dataclasses import replace

from connector import audit
from connector.dsr_servicebase import ServiceBase
from connector.dsr_store import receipt_keys_retired
from connector.receipts import ListedKey, Verification, document_key_id, verify_with_listing
from connector.receipts import verify_receipt as _verify_bytes

__all__ = ["ReceiptKeys"]


class ReceiptKeys(ServiceBase):
    """The service's receipts and the keys they are signed with."""

    def receipt(self, request_id: str) -> str | None:
        """The signed receipt (canonical JSON text) of a completed request, else ``None``."""
        row = self.db.get(request_id)
        return None if row is None else row.receipt

    def public_key_pem(self) -> str:
        """The receipts' public key as PEM (the key pair is created on first use)."""
        return self.signer.public_key_pem()

    def public_key_listing(self) -> str:
        """Every public key this deployment signed receipts with, as PEM, for a third party
        to check receipts offline (``dsr public-key --all``): each retired one preceded by
        when it was retired (:meth:`listed_keys`), the one in use last."""
        return "".join(listed.pem() for listed in self.listed_keys())

    def listed_keys(self) -> tuple[ListedKey, ...]:
        """The receipt keys (:meth:`ReceiptSigner.listed_keys`), a retired one whose file
        keeps no moment (an earlier version retired it) with the one its ``keys.rotated``
        entry gives, while the audit trail holds it."""
        *retired, current = self.signer.listed_keys()
        rotations = receipt_keys_retired(self.rt.store.db)
        return (
            *(
                replace(listed, retired_at=rotations.get(listed.key_id))
                if listed.retired_at is None
                else listed
                for listed in retired
            ),
            current,
        )

    def verify_receipt(self, data: bytes, public_key_pem: bytes | None = None) -> Verification:
        """Check a receipt against a given public key (or a listing of them, as
        :meth:`public_key_listing` gives), or the deployment's key that signed it (the
        current one or a retired one: receipts outlive key rotations).

        A retired key verifies only what it signed before its retirement: the moment the
        given text says, or this store's, the earlier, so a key printed before its
        retirement (no such line) does not let a receipt signed with a copy of it since
        pass for one of the deployment's.
        """
        wanted = document_key_id(data) or ""
        listed = self.listed_keys()
        ours = {key.key_id: key for key in listed}
        if not public_key_pem:
            # Every key the store kept (the one in use, those rotated away or replaced by a
            # restore): the one the receipt names, else the one in use, which says it is
            # signed with another key.
            chosen = ours.get(wanted, listed[-1])
            result = _verify_bytes(data, chosen.public, retired_at=chosen.retired_at)
            if not result.ok:
                return result
            return replace(
                result,
                signer="current" if chosen is listed[-1] else "former",
                made_at=chosen.made_at,
                retired_at=chosen.retired_at,
            )
        return verify_with_listing(data, public_key_pem, ours)

    def rotate_receipt_key(self) -> tuple[str, str]:
        """Replace the receipt signing key; old receipts still verify, and the old key,
        kept with the moment it was retired, verifies nothing signed after it. Audited by
        key id."""
        old, new = self.signer.rotate(self.timestamp())
        self._audit_receipt_key_rotated(old, new)
        return old, new

    def _audit_receipt_key_rotated(self, old: str, new: str) -> None:
        """A rotation of the receipt signing key, asked for or made by a load that found the
        key in use retired (:class:`ReceiptSigner`), audited by key id."""
        audit.append(
            self.rt.store, audit.KEY_ROTATED, {"key": "receipt-signing", "old": old, "new": new}
        )
