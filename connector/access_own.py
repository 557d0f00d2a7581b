"""What klantsync itself keeps about the person, in plain words for their access report.

The connector part of ``data.json`` is ids, statuses and times as the store keeps them. A
person who reads ``suppression.kind: erasure`` does not learn from it that they were erased,
from where, what klantsync keeps of them since and why, for how long, or how to be added
again; one it holds nothing about read a row of ids. :func:`own_lines` says it in sentences
(Art. 12(1) GDPR: "clear and plain language"), with the Art. 15(1) facts that belong to it:
the purpose, what is kept (a keyed hash, not the address) and the storage period.

Sentences name systems, times and request ids only: never a value of the person's data, nor
an operator's note (a system's detail may hold one), which the receipt and the controller
give. What an erasure left at a system on purpose (orders kept for the tax office) is said
from the reason codes its check recorded (``retained``), in the words of
:data:`~connector.access_labels.KEPT_AFTER_ERASURE`, never from the system's note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connector.access_labels import KEPT_AFTER_ERASURE
from connector.register_render import local_time

__all__ = ["holds_nothing", "nothing_line", "own_lines"]

_T: dict[str, dict[str, str]] = {
    "en": {
        "erased": "You were erased on {at}: at your request ({request}) klantsync had your "
        "data deleted from the connected systems. Per system: {systems}.",
        "listed": "You were erased: klantsync has kept you on its suppression list since {at}.",
        "erasing": "You asked to be erased on {at} ({request}); the erasure is still under "
        "way. Per system so far: {systems}.",
        "deleted": "deleted",
        "deleted_reversible": "deleted (the system can still restore it for a while before "
        "it deletes it for good; the erasure's receipt says how long)",
        "not_held": "held nothing about you",
        "exempt": "not erased: kept on purpose or left out of the erasure (the erasure's "
        "receipt says why; ask the controller)",
        "open": "not done yet",
        "nothing_deleted": "nothing deleted",
        "kept_other": "some records kept on purpose (the erasure's receipt says why; ask "
        "the controller)",
        "no_copy": "klantsync keeps no copy of your e-mail address.",
        "sealed": "Until the erasure is done, klantsync keeps your e-mail address (and a "
        "phone number given with it) encrypted with the request, to carry it out; that copy "
        "is destroyed when the erasure completes.",
        "hash": "It keeps a keyed hash of it "
        "(a pseudonym that cannot be turned back into the address without klantsync's key), "
        "and of any phone number erased with it, on its suppression list. Every sync checks "
        "that list, so klantsync brings your data into no system again, not even from a "
        "restored backup of a system it reads from.",
        "until": "This is kept for as long as your erasure must hold: it has no end date, and "
        "is removed only when you are added again.",
        "readmit": "To be added again: if you sign up again of your own accord (a new "
        "account in the shop, say), klantsync passes none of your new details on to the "
        "other systems until the controller takes you off the suppression list. Ask the "
        "controller to; from then on the systems receive you as the shop has you.",
        "opted_out": "You unsubscribed at {system} on {at}. klantsync keeps that under your "
        "pseudonym (not your address), so that no sync subscribes you there again; it is "
        "kept until you subscribe there again yourself, or are erased.",
        "nothing": "klantsync holds nothing about you: none of the connected systems has a "
        "record of you, klantsync has delivered nothing about you, and it keeps nothing of "
        "yours but the record of this request (under a pseudonym, not your address).",
    },
    "nl": {
        "erased": "U bent gewist op {at}: op uw verzoek ({request}) liet klantsync uw "
        "gegevens verwijderen uit de gekoppelde systemen. Per systeem: {systems}.",
        "listed": "U bent gewist: klantsync houdt u sinds {at} op zijn blokkadelijst.",
        "erasing": "U vroeg op {at} om gewist te worden ({request}); dat wissen is nog "
        "bezig. Per systeem tot nu toe: {systems}.",
        "deleted": "verwijderd",
        "deleted_reversible": "verwijderd (het systeem kan het nog een tijd herstellen "
        "voordat het dit definitief wist; het ontvangstbewijs van het wissen zegt hoe lang)",
        "not_held": "had geen gegevens over u",
        "exempt": "niet gewist: bewust bewaard of buiten het wissen gehouden (het "
        "ontvangstbewijs van het wissen zegt waarom; vraag het de "
        "verwerkingsverantwoordelijke)",
        "open": "nog niet gedaan",
        "nothing_deleted": "niets verwijderd",
        "kept_other": "sommige gegevens bewust bewaard (het ontvangstbewijs van het wissen "
        "zegt waarom; vraag het de verwerkingsverantwoordelijke)",
        "no_copy": "klantsync bewaart geen kopie van uw e-mailadres.",
        "sealed": "Totdat het wissen klaar is, bewaart klantsync uw e-mailadres (en een "
        "telefoonnummer dat ermee is opgegeven) versleuteld bij het verzoek, om het wissen "
        "uit te voeren; die kopie wordt vernietigd zodra het wissen klaar is.",
        "hash": "Het bewaart er een "
        "sleutel-hash van (een pseudoniem dat zonder de sleutel van klantsync niet terug "
        "te rekenen is naar het adres), en van elk telefoonnummer dat ermee gewist is, op "
        "zijn blokkadelijst. Elke synchronisatie kijkt op die lijst, dus klantsync brengt "
        "uw gegevens in geen enkel systeem terug, ook niet uit een teruggezette back-up van "
        "een systeem waaruit het leest.",
        "until": "Dit wordt bewaard zolang uw wissen moet gelden: er is geen einddatum, en "
        "het verdwijnt pas als u weer wordt toegelaten.",
        "readmit": "Weer toegelaten worden: als u zich uit eigen beweging opnieuw aanmeldt "
        "(een nieuw account in de webwinkel bijvoorbeeld), geeft klantsync niets van uw "
        "nieuwe gegevens door aan de andere systemen totdat de "
        "verwerkingsverantwoordelijke u van de blokkadelijst haalt. Vraag de "
        "verwerkingsverantwoordelijke daarom; vanaf dan krijgen de systemen u zoals de "
        "webwinkel u heeft.",
        "opted_out": "U meldde zich af bij {system} op {at}. klantsync bewaart dat onder uw "
        "pseudoniem (niet uw adres), zodat geen synchronisatie u daar opnieuw aanmeldt; het "
        "wordt bewaard tot u zich daar zelf opnieuw aanmeldt, of wordt gewist.",
        "nothing": "klantsync heeft niets over u: geen van de gekoppelde systemen heeft een "
        "record van u, klantsync heeft niets over u geleverd, en het bewaart niets van u "
        "behalve de registratie van dit verzoek (onder een pseudoniem, niet uw adres).",
    },
}

#: A system's part in an erasure, by its status, as the person is told it.
_OUTCOMES = {
    "verified_absent": "deleted",
    "done": "deleted",
    "not_held": "not_held",
    "skipped": "not_held",
    "exempt": "exempt",
}


def own_lines(lang: str, connector: Mapping[str, Any], kinds: Mapping[str, str]) -> list[str]:
    """What klantsync keeps about the person, in sentences in ``lang``; plain text.

    Args:
        connector: the connector part of the bundle (``DsrStore.holdings`` and more), the
            person's former addresses under ``same_person``.
        kinds: system name -> adapter kind, to name each system as the report does.
    """
    t = _T[lang]
    lines: list[str] = []
    people = [connector, *(connector.get("same_person") or [])]
    seen: set[str] = set()
    under_way = False
    for held in people:
        entry = held.get("suppression")
        if not isinstance(entry, Mapping) or str(entry.get("request_id")) in seen:
            continue
        seen.add(str(entry.get("request_id")))
        lines.append(_erasure(lang, entry, kinds))
        under_way = under_way or _under_way(entry)
    if lines:
        # An erasure under way keeps the address it erases, sealed in its request, until it
        # completes: "no copy" was untrue of every report written meanwhile.
        copy = t["sealed"] if under_way else t["no_copy"]
        lines += [f"{copy} {t['hash']}", t["until"], t["readmit"]]
    for held in people:
        for system, at in sorted((held.get("opted_out_at") or {}).items()):
            lines.append(
                t["opted_out"].format(system=_named(system, kinds), at=local_time(str(at)))
            )
    return lines


def holds_nothing(
    systems: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]],
    exempt: Mapping[str, str],
    connector: Mapping[str, Any],
) -> bool:
    """Whether neither a system nor klantsync holds anything about the person but this
    request's own record: no record, nothing delivered, queued, refused or suppressed."""
    if exempt or any(records for _, records in systems.values()):
        return False
    for key, value in connector.items():
        if key in ("subject_id", "audit_trail"):
            continue
        if key == "requests":
            if len(value or []) > 1:
                return False
        elif value:
            return False
    return True


def nothing_line(lang: str) -> str:
    """The sentence for a person klantsync holds nothing about (:func:`holds_nothing`)."""
    return _T[lang]["nothing"]


def _erasure(lang: str, entry: Mapping[str, Any], kinds: Mapping[str, str]) -> str:
    """The sentence of one erasure: when, which request, and what it did per system."""
    t = _T[lang]
    parts = []
    for system, state in sorted((entry.get("systems") or {}).items()):
        outcome = _OUTCOMES.get(str(state.get("status")), "open")
        if outcome == "deleted" and state.get("reversible"):
            outcome = "deleted_reversible"
        kept = _kept(lang, state.get("retained")) if outcome != "open" else []
        if kept and outcome == "exempt":
            # Exempt because the system kept what it holds on purpose, and says why: not
            # "kept or left out", which sent the person to ask which.
            outcome = "nothing_deleted"
        parts.append(f"{_named(system, kinds)}: {'; '.join([t[outcome], *kept])}")
    done = entry.get("request_status") == "completed" and entry.get("completed_at")
    at = str(entry.get("completed_at") if done else entry.get("created_at") or "")
    if "request_status" not in entry:
        # Taken over from a store a restore replaced, its request's record not with it.
        return t["listed"].format(at=local_time(at))
    return t["erased" if done else "erasing"].format(
        at=local_time(at),
        request=entry.get("request_id") or "-",
        systems="; ".join(parts) or "-",
    )


def _kept(lang: str, codes: object) -> list[str]:
    """What an erasure kept on purpose at a system, by the ``retained`` codes its
    verification recorded, in ``lang``: each reason's text once; none for an erasure
    recorded before the codes were (its outcome is said as it always was)."""
    if not isinstance(codes, list):
        return []
    said: list[str] = []
    for code in codes:
        if str(code) in KEPT_AFTER_ERASURE:
            texts = KEPT_AFTER_ERASURE[str(code)]
            text = "" if texts is None else texts[1 if lang == "nl" else 0]
        else:
            text = _T[lang]["kept_other"]
        if text and text not in said:
            said.append(text)
    return said


def _under_way(entry: Mapping[str, Any]) -> bool:
    """Whether the erasure of a suppression ``entry`` is still open (its request known)."""
    return "request_status" in entry and entry.get("request_status") != "completed"


def _named(system: str, kinds: Mapping[str, str]) -> str:
    return f"{system} ({kinds[system]})" if system in kinds else system
