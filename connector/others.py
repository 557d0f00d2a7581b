"""Other people's e-mail addresses quoted in the free text of a person's access copy.

What staff write about a person (a CRM note, a call's or meeting's notes, a task, an order
note) and what the person wrote themselves (a reply, a shop order's note) can quote other
people's addresses: "called back, her partner cees@elders.example asked too", a reply's
"Cees <cees@elders.example> wrote:", a forward's header block. The text is the person's data
and is handed over whole, but those addresses are others' (Art. 15(4) GDPR): each reads
:data:`LEFT_OUT`, the person's own stays. Names in running text cannot be told from other
words and stay.

Who wrote a note, where a system names a staff member for it (Pipedrive's ``user``,
Mailchimp's ``created_by``, a WooCommerce order note's ``author``), is another person too:
the note, its text and its date stay, the field naming them is left out (``leave_out``).

Access copies only: a sync writes what the source holds, as it holds it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

__all__ = ["LEFT_OUT", "own_addresses", "text_without_others", "without_others_addresses"]

#: What stands in the text where another person's address stood.
LEFT_OUT: Final = "[address left out]"

#: An address as text holds one (in a ``mailto:`` link, between ``&lt;`` and ``&gt;`` in
#: HTML): no ``;``, ``<`` or ``>`` in it, so an HTML entity next to it is not taken along.
_ADDRESS: Final = re.compile(r"[\w.!#$%'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")


def without_others_addresses(text: str, own: Collection[str]) -> str:
    """``text`` with each e-mail address not in ``own`` (lower-case addresses) replaced by
    :data:`LEFT_OUT`; the person's own, in any case, and every other word as written."""
    return _ADDRESS.sub(lambda m: m.group() if m.group().lower() in own else LEFT_OUT, text)


def text_without_others(
    record: Mapping[str, Any],
    keys: Iterable[str],
    own: Collection[str],
    *,
    leave_out: Collection[str] = (),
) -> dict[str, Any]:
    """``record`` with :func:`without_others_addresses` applied to each of ``keys`` it holds
    as text, and without ``leave_out``, keys that name another person whole (a note's staff
    author); anything else (absent, ``None``, not text) as it was."""
    kept = {key: value for key, value in record.items() if key not in leave_out}
    for key in keys:
        value = kept.get(key)
        if isinstance(value, str):
            kept[key] = without_others_addresses(value, own)
    return kept


def own_addresses(*found: Any) -> frozenset[str]:
    """The person's addresses among ``found`` (the one asked for, those their records hold),
    stripped and lower case; anything that is no address as text is passed over."""
    return frozenset(a.strip().lower() for a in found if isinstance(a, str) and "@" in a)
