"""Mappings: ``mappings/<system>.toml`` loaded, checked and applied.

A mapping is the allow-list of one system: the canonical fields it exchanges, where each lives
in the system's records, how values are normalised, which way they flow and *why* (purpose).
Only mapped fields ever leave the connector; a field a source sends that no mapping names is
dropped and counted by name, so operators can see what was withheld.

File format::

    system = "woocommerce"          # the kind of system it is for; a config that gives it
                                    # to a system of another kind is refused at load
    id_path = "id"                  # where the system's own record id lives
    record_root = "properties"      # optional: pulled records keep their fields under this key
    default_region = "NL"           # the country values are read as (phone numbers written
                                    # without a country code, postcodes, surnames' particles)
                                    # where the record's own country (if mapped) is not known
    requires_consent = "marketing"  # optional: only people with this consent are sent here
    withdrawn = { status = "unsubscribed" }  # optional: sent (with the e-mail) to someone
                                    # who received data here and has since withdrawn consent
    consent_renewed = { status = "pending" }  # optional, with withdrawn: sent with the fields
                                    # to someone sent ``withdrawn`` who has given consent again
    ignore = ["id", "_links"]       # technical paths that are not personal data (not counted)

    [fields.email]
    path = "email"                  # dotted; "meta_data.<key>" reads WooCommerce-style meta
    transform = ["trim", "lower"]   # a value given that these cannot read is not sent, and
                                    # counted by field (``unreadable``)
    purpose = "Customer administration"
    direction = "both"              # "in" (read only), "out" (write only) or "both"
    keep_when_emptied = false       # optional: true keeps the value this system holds when
                                    # the source no longer holds one (see connector/emptying.py;
                                    # a field the system's own users fill in as well)
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import phonenumbers
from pydantic import Field, ValidationError, field_validator

from connector.configfile import Problems, pydantic_error, read_toml
from connector.errors import ConfigError
from connector.model import CANONICAL_FIELDS, CONSENT_FIELDS, INVISIBLE, Person
from connector.settings import StrictModel
from connector.transforms import REGIONAL, Transform, make_transform, run_chain, text_chain

__all__ = ["FieldMapping", "SystemMapping", "load_mapping"]

Direction = Literal["in", "out", "both"]


def _dotted_path(value: str) -> str:
    """``value`` when each of its dot-separated keys is named (an empty one refused).

    "billing..phone", "email." or ".email" name no place in any record: read, the field would
    never be found (an e-mail so: every record "without a usable e-mail"); written, it would
    go under an empty key. Nothing else would say so.
    """
    if value and "" in value.split("."):
        raise ValueError(_dotted_path_problem(value))
    return value


def _dotted_path_problem(value: str) -> str:
    """What is wrong with ``value``, a path with an empty key between its dots."""
    return (
        f"{value!r} has an empty key between its dots; a path names one key per segment, "
        'such as "billing.phone"'
    )


class _FieldFile(StrictModel):
    """One ``[fields.<name>]`` table as written; what it means is checked in ``_load_field``."""

    path: str = ""  # empty or missing: refused with words saying what the key is for
    purpose: str = ""
    transform: list[str] = Field(default_factory=list)
    direction: Direction = "both"
    keep_when_emptied: bool = False

    @field_validator("transform", mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # "trim" is short for ["trim"]

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _dotted_path(value)


class _MappingFile(StrictModel):
    """A mapping file as written: the types of its keys (a wrong type is a clear error)."""

    system: str | None = None
    id_path: str = Field(default="id", min_length=1)
    record_root: str | None = Field(default=None, min_length=1)
    default_region: str = "NL"
    requires_consent: str | None = None
    withdrawn: dict[str, Any] = Field(default_factory=dict)
    consent_renewed: dict[str, Any] = Field(default_factory=dict)
    ignore: list[str] = Field(default_factory=list)
    fields: dict[str, Any] = Field(default_factory=dict)  # each checked by _FieldFile

    @field_validator("id_path")
    @classmethod
    def _id_path(cls, value: str) -> str:
        return _dotted_path(value)

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        # Phone numbers written without a country code are read as this region's; a code
        # libphonenumber does not know would make every such number unusable, silently.
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                f'unknown region {value!r}; use an ISO 3166-1 alpha-2 code such as "NL"'
            )
        return value.upper()

    @field_validator("requires_consent")
    @classmethod
    def _consent(cls, value: str | None) -> str | None:
        if value is not None and value not in CONSENT_FIELDS:
            raise ValueError(f"unknown consent {value!r}; known: {sorted(CONSENT_FIELDS)}")
        return value


_TOP_KEYS = set(_MappingFile.model_fields)
_FIELD_KEYS = set(_FieldFile.model_fields)


@dataclass(frozen=True)
class FieldMapping:
    """One canonical field <-> one system path."""

    canonical: str
    path: str
    transforms: tuple[Transform, ...]
    transform_names: tuple[str, ...]
    purpose: str
    direction: Direction
    #: A value the source no longer holds is not emptied here (connector/emptying.py).
    keep_when_emptied: bool = False

    @property
    def inbound(self) -> bool:
        return self.direction in ("in", "both")

    @property
    def outbound(self) -> bool:
        return self.direction in ("out", "both")

    def convert(self, value: Any) -> Any:
        return run_chain(self.transforms, _scalar(value))


@dataclass
class SystemMapping:
    """A loaded mapping file, ready to apply.

    Attributes:
        path: the file it came from (for messages).
        fields: canonical name -> field mapping.
        id_path: where the system's record id lives.
        requires_consent: a consent purpose people must have to be sent here, if any.
        withdrawn: what is sent someone who was sent here and withdrew that consent.
        consent_renewed: what is sent, with their fields, someone sent ``withdrawn`` who has
            given the consent again (see :meth:`renewal`).
        ignore: system paths known not to be personal data (not counted as withheld).
        system: the kind of system the file says it is for (its ``system`` key), if any.
    """

    path: Path
    fields: dict[str, FieldMapping]
    id_path: str = "id"
    record_root: str | None = None
    requires_consent: str | None = None
    withdrawn: dict[str, Any] = field(default_factory=dict)
    consent_renewed: dict[str, Any] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()
    default_region: str = "NL"
    system: str | None = None
    _inbound: list[tuple[str, tuple[str, ...], FieldMapping]] = field(default_factory=list)
    _outbound: list[FieldMapping] = field(default_factory=list)
    _known_paths: frozenset[str] = frozenset()
    _plans: dict[tuple[str, tuple[str, ...]], list[tuple[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._inbound = [
            (name, tuple(f.path.split(".")), f) for name, f in self.fields.items() if f.inbound
        ]
        self._outbound = [f for f in self.fields.values() if f.outbound]
        self._known_paths = frozenset(f.path for f in self.fields.values()) | self.ignore
        self._groups = _read_groups(self._inbound)
        self._read_id = _getter(tuple(self.id_path.split(".")))
        # Fields read again in the person's own country, where the mapping reads one (see
        # _read_in_their_country).
        country = self.fields.get("country")
        self._regional = (
            [
                (name, _getter(parts))
                for name, parts, mapping in self._inbound
                if REGIONAL.intersection(mapping.transform_names)
            ]
            if country is not None and country.inbound
            else []
        )
        self._regional_chains: dict[tuple[str, str], tuple[Transform, ...] | None] = {}
        #: Every name a write to this system may carry: the fields it is sent, and the
        #: markers of a withdrawal or a renewed consent.
        self.allowed_paths = (
            frozenset(f.path for f in self.sent_fields())
            | frozenset(self.withdrawn)
            | frozenset(self.consent_renewed)
        )

    @property
    def outbound_fields(self) -> list[str]:
        """Canonical names this system may receive (the allow-list)."""
        return [f.canonical for f in self._outbound]

    def sent_fields(self) -> list[FieldMapping]:
        """The fields this system receives as a destination: the outbound ones, and the
        e-mail always. Every write carries it (it is how each system is told who the record
        is), whatever its field's ``direction`` says."""
        email = self.fields["email"]
        return self._outbound if email.outbound else [email, *self._outbound]

    def source_fields(self) -> frozenset[str]:
        """The top-level fields of a record that reading it as a source needs: those its
        inbound fields and its id live under (or the record root, where the fields sit under
        one). A source that can be asked for fewer fields is asked for these, so
        the rest never leaves the system (see ``Adapter``, ``ask_only_for``)."""
        roots = {self.id_path.split(".", 1)[0]}
        if self.record_root is not None:
            return frozenset({*roots, self.record_root})  # one key, dots and all
        inbound = (f.path for f in self.fields.values() if f.inbound)
        return frozenset({*roots, *(path.split(".", 1)[0] for path in inbound)})

    def source_paths(self) -> dict[str, str]:
        """Every path reading a record as a source needs, nested ones whole
        (``defaultAddress.city``), each with the mapping key that names it
        (``fields.city.path``, ``id_path``; the first, where two name one path). A source
        asked field by field, Shopify's GraphQL, is asked for these (see ``Adapter``,
        ``ask_only_for_paths``). Under a ``record_root``, the fields' paths are as written,
        inside it."""
        paths = {self.id_path: "id_path"}
        for name, mapping in self.fields.items():
            if mapping.inbound:
                paths.setdefault(mapping.path, f"fields.{name}.path")
        return paths

    def record_id(self, record: Mapping[str, Any]) -> str | None:
        """The system's own id of a raw record."""
        value = self._read_id(record)
        return None if value in (None, "", 0) else str(value)

    def inbound(
        self,
        record: Mapping[str, Any],
        withheld: Counter[str] | None = None,
        unreadable: Counter[str] | None = None,
    ) -> Person:
        """Raw system record -> canonical person; count unmapped source fields in ``withheld``
        and, by canonical name, the values given that the field's transforms cannot read
        (a phone number that is none) in ``unreadable``: they are not sent, and a
        destination keeps what it had, so the sync report says how many."""
        person = Person()
        if self.record_root is not None:
            nested = record.get(self.record_root)
            record = nested if isinstance(nested, Mapping) else {}
        # ``inbound`` runs for every record of every sync: the fields are read a group at a
        # time (those under one key share its lookup), and a text value, nearly every one,
        # goes through its transforms as one call (see _ReadGroup).
        source: Any
        for group in self._groups:
            if group.outer is None:
                source = record
            else:
                source = record.get(group.outer)
                if group.by_path or source.__class__ is not dict:  # a meta list, say
                    self._read_each(record, group, person, unreadable)
                    continue
            for name, key, _, text, other in group.fields:
                given = source.get(key)
                if given is None:
                    continue
                value = text(given) if given.__class__ is str else other(given)
                if value is not None:
                    person[name] = value
                elif given and _has_value(given):
                    _unread(person, name, unreadable)
        if self._regional:
            self._read_in_their_country(record, person, unreadable)
        if withheld is not None:
            unmapped: list[str] = []
            self._collect_unmapped(record, "", unmapped)
            withheld.update(unmapped)  # counted in C; a `+= 1` per path went through Python
        return person

    @staticmethod
    def _read_each(
        record: Mapping[str, Any],
        group: _ReadGroup,
        person: Person,
        unreadable: Counter[str] | None,
    ) -> None:
        """Read ``group``'s fields one by one, by their whole paths (see :func:`_getter`)."""
        for name, _, read, text, other in group.fields:
            given = read(record)
            if given is None:
                continue
            value = text(given) if given.__class__ is str else other(given)
            if value is not None:
                person[name] = value
            elif given and _has_value(given):
                _unread(person, name, unreadable)

    def _read_in_their_country(
        self, record: Mapping[str, Any], person: Person, unreadable: Counter[str] | None
    ) -> None:
        """Read the fields whose transforms follow a country's conventions as the person's own.

        ``default_region`` is the shop's country; a Belgian customer of a Dutch shop who
        types "0470 12 34 56" means +32 470 12 34 56, which read as Dutch would become a
        different, valid-looking number (+31 470 ...) sent on to every system. Numbers
        written with a country code are the same either way. So too a postcode is written
        the Dutch way ("1234 AB") for a Dutch customer alone, and a surname's particle is
        capitalised for a Belgian one ("De Smet"). Only people from another country than
        ``default_region`` are read again, and only the fields that read otherwise there.
        """
        country = person.get("country")
        if country is None or country == self.default_region:
            return
        for name, read in self._regional:
            chain = self._regional_chain(name, country)
            if chain is None:
                continue  # read there as here
            raw = read(record)
            value = run_chain(chain, _scalar(raw))
            # Whether the value is unreadable goes by this reading, not the first one.
            counted = name not in person and _has_value(raw)
            lost = value is None and _has_value(raw)
            if value is None:
                person.pop(name, None)
            else:
                person[name] = value
            if lost:
                person.unread = person.unread | {name}
            elif name in person.unread:
                person.unread = person.unread - {name}
            if unreadable is not None and counted != lost:
                if counted:
                    unreadable[name] -= 1
                    if unreadable[name] <= 0:
                        del unreadable[name]
                else:
                    unreadable[name] += 1

    def _regional_chain(self, name: str, country: str) -> tuple[Transform, ...] | None:
        """``name``'s transforms as they read a value of ``country`` (see ``REGIONAL``), or
        ``None`` where they read it as in ``default_region``. A phone number is read in a
        region libphonenumber knows only."""
        key = (name, country)
        if key in self._regional_chains:
            return self._regional_chains[key]
        spec = self.fields[name]
        chain: tuple[Transform, ...] | None = tuple(
            _regional(n, country, t)
            for n, t in zip(spec.transform_names, spec.transforms, strict=True)
        )
        if chain == spec.transforms:
            chain = None
        if len(self._regional_chains) >= 1024:  # bounded, as _plans: countries are few
            self._regional_chains.clear()
        self._regional_chains[key] = chain
        return chain

    def convert_for(self, name: str, value: Any, country: str | None) -> Any:
        """``value`` for field ``name`` as :meth:`inbound` reads it for a person of
        ``country``: a phone written without a country code is one of theirs (a correction
        of a Belgian customer's "0470 12 34 56" is +32..., not the shop's +31...)."""
        spec = self.fields[name]
        if country is None or country == self.default_region:
            return spec.convert(value)
        chain = self._regional_chain(name, country)
        return spec.convert(value) if chain is None else run_chain(chain, _scalar(value))

    def read_for(self, record: Mapping[str, Any], name: str, country: str | None) -> Any:
        """Field ``name`` of a raw ``record`` as :meth:`inbound` reads it once the person's
        country is ``country``: what a number held without a country code comes to mean
        after a correction of the country alone."""
        if self.record_root is not None:
            nested = record.get(self.record_root)
            record = nested if isinstance(nested, Mapping) else {}
        raw = _get(record, tuple(self.fields[name].path.split(".")))
        return None if raw is None else self.convert_for(name, raw, country)

    def _collect_unmapped(self, record: Mapping[str, Any], prefix: str, out: list[str]) -> None:
        """Append to ``out`` the paths of non-empty leaves that are neither known nor ignored.

        An ignored path hides everything under it; WooCommerce-style meta lists count by key
        (``meta_data.date_of_birth``). This runs for every record of every sync, and records
        of one system mostly share their keys, so what each key's path is and whether it is
        known or ignored is worked out once per set of keys (:meth:`_plan`), not per record.
        """
        for key, path in self._plan(prefix, tuple(record)):
            value = record[key]
            if type(value) is str:  # most leaves: settled without the checks below
                if value:
                    out.append(path)
            elif isinstance(value, dict):
                if value:
                    self._collect_unmapped(value, path + ".", out)
            elif isinstance(value, list):
                held = False  # an item that is no meta entry: the list counts as one field
                for item in value:
                    if isinstance(item, dict):
                        meta_key = item.get("key")
                        if isinstance(meta_key, str):
                            leaf = f"{path}.{meta_key}"
                            if leaf not in self._known_paths:
                                out.append(leaf)
                            continue
                    # Shopify's tags, a list of addresses: dropped like any field, and
                    # counted so the report names them.
                    held = held or (item is not None and item != "" and item is not False)
                if held:
                    out.append(path)
            elif value is not None and value != "" and value is not False:
                out.append(path)

    def _plan(self, prefix: str, keys: tuple[str, ...]) -> list[tuple[str, str]]:
        """(key, path) for the keys under ``prefix`` to look at; cached per set of keys.

        A mapped path is read, not withheld, and an ignored one hides all under it: neither
        is looked at again, so a record costs only its unmapped keys (a third of a shop's).
        """
        plan = self._plans.get((prefix, keys))
        if plan is None:
            if len(self._plans) >= 1024:  # records of ever-changing shapes: do not grow
                self._plans.clear()
            paths = [(key, prefix + str(key)) for key in keys]
            plan = [(k, p) for k, p in paths if p not in self._known_paths]
            self._plans[(prefix, keys)] = plan
        return plan

    def outbound(self, person: Mapping[str, Any]) -> dict[str, Any]:
        """Canonical person -> the system's fields, allow-listed: nothing unmapped leaves."""
        # Canonical values are already normalised on the way in; converting again would only
        # cost time (phone parsing dominates the hot path).
        payload: dict[str, Any] = {}
        for mapping in self._outbound:
            value = person.get(mapping.canonical)
            if value is not None:
                payload[mapping.path] = value
        return payload

    def withdrawal(self, person: Mapping[str, Any]) -> dict[str, Any]:
        """What to send someone who withdrew the consent this system needs: e-mail + marker."""
        return {self.fields["email"].path: person.get("email"), **self.withdrawn}

    def renewal(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """What to send someone given ``withdrawn`` who consents again: fields + marker.

        Without it their fields would go as for anyone else, and a system that keeps a
        withdrawal (Mailchimp keeps an unsubscribed member unsubscribed) would keep them out
        although they asked to be back.
        """
        return {**fields, **self.consent_renewed}

    def admits(self, person: Person) -> bool:
        """Whether the purpose/consent gate lets this person through to this system."""
        return self.requires_consent is None or person.has_consent(self.requires_consent)

    def reads_consent(self, purpose: str) -> bool:
        """Whether people read from this system (a source) can carry ``purpose``'s consent:
        its mapping reads the field that records it. One that does not says nothing of who
        gave or withdrew it."""
        read = self.fields.get(CONSENT_FIELDS[purpose])
        return read is not None and read.inbound

    def purposes(self) -> dict[str, str]:
        """Canonical field -> purpose, for the register and access reports."""
        return {name: f.purpose for name, f in self.fields.items()}


@dataclass(frozen=True)
class _ReadGroup:
    """Mapped fields read together: consecutive ones under the same top-level key.

    ``outer`` is that key (``billing`` for ``billing.phone`` and ``billing.city``), or
    ``None`` for fields at the top of the record. Each field is ``(name, key, read, text,
    other)``: ``key`` its last key, ``read`` a reader of its whole path, ``text`` its
    transforms as one function of a text value, ``other`` of any other value (which must
    first be a scalar, see :func:`_scalar`). A path of three keys or more is a group of its
    own, read ``by_path``. Grouping only neighbours keeps a person's fields in mapping order.
    """

    outer: str | None
    fields: tuple[tuple[str, str, Callable[[Mapping[str, Any]], Any], Transform, Transform], ...]
    by_path: bool = False


def _read_groups(
    inbound: list[tuple[str, tuple[str, ...], FieldMapping]],
) -> list[_ReadGroup]:
    groups: list[_ReadGroup] = []
    for name, parts, mapping in inbound:
        member = (
            name,
            parts[-1],
            _getter(parts),
            text_chain(mapping.transforms),
            mapping.convert,
        )
        outer = parts[0] if len(parts) > 1 else None
        last = groups[-1] if groups else None
        if len(parts) > 2:
            groups.append(_ReadGroup(outer, (member,), by_path=True))
        elif last is not None and last.outer == outer and not last.by_path:
            groups[-1] = _ReadGroup(outer, (*last.fields, member))
        else:
            groups.append(_ReadGroup(outer, (member,)))
    return groups


def _regional(name: str, country: str, transform: Transform) -> Transform:
    """The transform called ``name`` as it reads a value of ``country``; ``transform`` itself
    where that is no regional one, or a phone number of a country libphonenumber does not
    know (the mapping's ``default_region`` is the better guess)."""
    if name not in REGIONAL or (name == "phone" and country not in phonenumbers.SUPPORTED_REGIONS):
        return transform
    made = make_transform(name, country)
    assert made is not None  # every regional transform is known
    return made


def _unread(person: Person, name: str, unreadable: Counter[str] | None) -> None:
    """Note that the source gave ``name`` a value its transforms cannot read: counted for
    the report, and marked on the person so no write empties the field (see
    :attr:`Person.unread`)."""
    person.unread = person.unread | {name}
    if unreadable is not None:
        unreadable[name] += 1


def _has_value(given: Any) -> bool:
    """Whether ``given`` is a value, not blanks: a field that read it as none lost one.

    An object or a list where a value belongs is not read (see :func:`_scalar`), but one
    that holds something is a value all the same (a plugin's whole address record, a list
    of phone numbers): taken for none, the field was emptied in every system the flow wrote
    it to. An empty one is none, as ``false`` is: a shop built on PHP writes them for a
    field it holds nothing in. ``true`` where no yes/no belongs is a value no transform but
    ``bool`` reads.
    """
    if isinstance(given, str):
        return bool(given.translate(INVISIBLE).strip())
    if isinstance(given, Mapping | list):
        return bool(given)
    return given is True or (isinstance(given, int | float) and not isinstance(given, bool))


def _scalar(value: Any) -> str | bool | None:
    """What a mapped field may hold: text or a yes/no, never an object or a list.

    A number is read as its text (a postcode or a house number a system keeps as one). An
    object or a list where a value belongs is not read at all: passed on, it would carry
    whatever it holds (a plugin's whole address record, a date of birth) past the
    allow-list, which names the field and not what is inside it.
    """
    if isinstance(value, str | bool) or value is None:
        return value
    if isinstance(value, int | float):
        return str(value)
    return None


def _get(record: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    current: Any = record
    for part in parts:
        if isinstance(current, Mapping):
            current = current.get(part)
        elif isinstance(current, list):
            # WooCommerce-style meta: [{"key": "date_of_birth", "value": "..."}]
            current = next(
                (
                    m.get("value")
                    for m in current
                    if isinstance(m, Mapping) and m.get("key") == part
                ),
                None,
            )
        else:
            return None
        if current is None:
            return None
    return current


def _getter(parts: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Any]:
    """A reader of one dotted path: plain dict lookups where the record is plain dicts."""
    if len(parts) == 1:
        (key,) = parts

        def top(record: Mapping[str, Any]) -> Any:
            return record.get(key)

        return top
    if len(parts) == 2:
        outer, inner = parts

        def nested(record: Mapping[str, Any]) -> Any:
            value = record.get(outer)
            if type(value) is dict:
                return value.get(inner)
            if type(value) is list:
                # WooCommerce-style meta, as in _get, without a generator per record.
                for item in value:
                    # A plain dict is known by its type: asking the Mapping ABC is slow.
                    is_mapping = type(item) is dict or isinstance(item, Mapping)
                    if is_mapping and item.get("key") == inner:
                        return item.get("value")
                return None
            return None if value is None else _get(value, (inner,))

        return nested
    return lambda record: _get(record, parts)


def load_mapping(path: Path) -> SystemMapping:
    """Read and check a mapping file.

    Every problem the file holds is told at once, as a config's are: the error raised is the
    first, and its ``also`` holds the others (each field's, each unknown key's).

    Raises:
        ConfigError: naming the file and key: unknown keys, unknown canonical fields or
            transforms, a field without a purpose, a bad direction, writes that would
            overwrite one another (:func:`_written_paths_problems`).
    """
    where = str(path)
    data = read_toml(path, "mapping file")
    problems = Problems()
    for key in data:
        # Checked before the model so the message can list the keys a mapping may have.
        if key not in _TOP_KEYS:
            problems.add(
                ConfigError(where, key, f"unknown key; expected one of {sorted(_TOP_KEYS)}")
            )
    known = {key: value for key, value in data.items() if key in _TOP_KEYS}

    def model() -> _MappingFile:
        try:
            return _MappingFile.model_validate(known)
        except ValidationError as exc:
            raise pydantic_error(where, "", exc) from None

    spec = problems.attempt(model)
    # The fields are checked whatever the rest of the file's problems: each is told now, not
    # after the operator has fixed the others. A region that is none reads them as Dutch.
    raw_fields = spec.fields if spec is not None else known.get("fields")
    region = spec.default_region if spec is not None else "NL"
    fields: dict[str, FieldMapping] = {}
    for name, raw in (raw_fields if isinstance(raw_fields, dict) else {}).items():
        loaded = problems.attempt(partial(_load_field, where, name, raw, region))
        if loaded is not None:
            fields[name] = loaded
    if isinstance(raw_fields, dict) and not raw_fields:
        problems.add(
            ConfigError(where, "fields", "a mapping needs at least one [fields.<name>] table")
        )
    elif isinstance(raw_fields, dict) and "email" not in raw_fields:
        problems.add(
            ConfigError(where, "fields.email", "every mapping must map the e-mail address")
        )
    # The markers are known once the file's keys are; the fields' places are judged anyway.
    markers = (
        {}
        if spec is None
        else {"withdrawn": spec.withdrawn, "consent_renewed": spec.consent_renewed}
    )
    for problem in _marker_problems(where, markers):
        problems.add(problem)
    for problem in _written_paths_problems(where, fields, markers):
        problems.add(problem)
    if spec is not None:
        if spec.withdrawn and spec.requires_consent is None:
            problems.add(ConfigError(where, "withdrawn", "only makes sense with requires_consent"))
        if spec.consent_renewed and not spec.withdrawn:
            problems.add(
                ConfigError(
                    where,
                    "consent_renewed",
                    "only makes sense with withdrawn (it undoes what that sent)",
                )
            )
    problems.raise_any()
    assert spec is not None
    return SystemMapping(
        path=path,
        fields=fields,
        id_path=spec.id_path,
        record_root=spec.record_root,
        requires_consent=spec.requires_consent,
        withdrawn=dict(spec.withdrawn),
        consent_renewed=dict(spec.consent_renewed),
        ignore=frozenset(spec.ignore),
        default_region=spec.default_region,
        system=spec.system,
    )


def _marker_problems(where: str, markers: Mapping[str, Mapping[str, Any]]) -> list[ConfigError]:
    """Each marker of a withdrawal or a renewed consent that no write can carry.

    A marker is written as a field is, its dotted name nested into the body (``nest``):
    ``{ "status..x" = "unsubscribed" }`` went under an empty key and ``{ "" = ... }`` as
    one, so a withdrawal set no status of the system's and the person who withdrew stayed
    subscribed, with no word said. Its value goes into the queued write as JSON, which has
    no dates or times: one written as TOML writes them (``2026-01-01``) passed ``check`` and
    ended the sync that queued the first withdrawal as an internal error; ``inf`` or ``nan``
    went as null.
    """
    found: list[ConfigError] = []
    for key, given in markers.items():
        for marker, value in given.items():
            problem: str | None
            if not marker:
                problem = (
                    "names no field; a marker names the system's own field it sets "
                    '(a status, such as status = "unsubscribed")'
                )
            elif "" in marker.split("."):
                problem = _dotted_path_problem(marker)
            else:
                problem = _unsendable(value)
                if problem is None:
                    continue
            found.append(ConfigError(where, f"{key}.{marker}", problem))
    return found


def _unsendable(value: Any) -> str | None:
    """Why ``value``, or a value it holds (in a list or a table), cannot go into a write as
    written: a TOML date or time (JSON has none), or ``inf`` or ``nan`` (sent as null)."""
    if isinstance(value, dt.date | dt.time):  # a datetime is a date too
        return (
            "is a date or time as TOML writes one, which no write carries (JSON has none): "
            'write it as the system takes it, in quotes (e.g. "2026-01-15")'
        )
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (inf and nan are none; a write would carry null)"
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((problem for item in items if (problem := _unsendable(item))), None)


def _written_paths_problems(
    where: str, fields: dict[str, FieldMapping], markers: Mapping[str, Mapping[str, Any]]
) -> list[ConfigError]:
    """Each place in a mapping where its writes would lose a value without a word.

    Two fields written to one path: the later one's value replaces the other's in every
    write. One written inside another's path ("billing" and "billing.city"): the body of a
    write (``connector.adapter.nest``) holds "billing" as the one's value or as an object of
    the other's, never both. A marker of a withdrawal or a renewed consent written on a
    field's place replaces that field's value (the e-mail itself, in a withdrawal).
    """
    found: list[ConfigError] = []
    written: dict[str, str] = {}  # path -> the field written there
    for name, mapping in fields.items():
        # The e-mail goes with every write, whatever its direction (SystemMapping.sent_fields).
        if not mapping.outbound and name != "email":
            continue
        clash = _clash(mapping.path, written)
        if clash is None:
            written[mapping.path] = name
            continue
        other_path, other = clash
        if other_path == mapping.path:
            problem = (
                f"{mapping.path!r} is fields.{other}'s path too; two fields written to one "
                "place overwrite each other"
            )
        else:
            problem = (
                f"{mapping.path!r} and fields.{other}'s path {other_path!r} lie one inside "
                "the other; a write holds only one of the two there"
            )
        fix = ' (make one direction = "in", or give it its own)'
        found.append(ConfigError(where, f"fields.{name}.path", problem + fix))
    for key, given in markers.items():
        for marker in given:
            clash = _clash(marker, written)
            if clash is None:
                continue
            other_path, other = clash
            found.append(
                ConfigError(
                    where,
                    f"{key}.{marker}",
                    f"{marker!r} is where fields.{other} is written ({other_path!r}): the "
                    "marker would replace its value; name a field of the system's own (a "
                    "status)",
                )
            )
    return found


def _clash(path: str, written: Mapping[str, str]) -> tuple[str, str] | None:
    """(path, field) of the written place ``path`` shares in a write's body: the same path,
    one inside it or one it lies inside ("billing" and "billing.city"); else ``None``."""
    for other, name in written.items():
        if other == path or other.startswith(path + ".") or path.startswith(other + "."):
            return other, name
    return None


def _load_field(where: str, name: str, spec: Any, region: str) -> FieldMapping:
    """One ``[fields.<name>]`` table, checked; every problem it holds told at once."""
    key = f"fields.{name}"
    if name not in CANONICAL_FIELDS:
        raise ConfigError(
            where, key, f"unknown canonical field {name!r}; known: {sorted(CANONICAL_FIELDS)}"
        )
    if not isinstance(spec, dict):
        raise ConfigError(where, key, "must be a table with path, purpose and transform")
    problems = Problems()
    for sub in spec:
        if sub not in _FIELD_KEYS:
            problems.add(
                ConfigError(where, f"{key}.{sub}", f"unknown key; expected {sorted(_FIELD_KEYS)}")
            )

    def model() -> _FieldFile:
        try:
            return _FieldFile.model_validate({k: v for k, v in spec.items() if k in _FIELD_KEYS})
        except ValidationError as exc:
            raise pydantic_error(where, key, exc) from None

    parsed = problems.attempt(model)
    if parsed is None:
        problems.raise_any()
    assert parsed is not None
    if not parsed.path:
        problems.add(
            ConfigError(where, f"{key}.path", "missing: where the field lives in the system")
        )
    if not parsed.purpose.strip():
        problems.add(
            ConfigError(where, f"{key}.purpose", "missing: every mapped field needs a purpose")
        )
    transforms: list[Transform] = []
    for tname in parsed.transform:
        made = make_transform(tname, region)
        if made is None:
            problems.add(ConfigError(where, f"{key}.transform", f"unknown transform {tname!r}"))
        else:
            transforms.append(made)
    problems.raise_any()
    return FieldMapping(
        canonical=name,
        path=parsed.path,
        transforms=tuple(transforms),
        transform_names=tuple(parsed.transform),
        purpose=parsed.purpose.strip(),
        direction=parsed.direction,
        keep_when_emptied=parsed.keep_when_emptied,
    )
