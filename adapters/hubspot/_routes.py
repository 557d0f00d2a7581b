"""The HubSpot sandbox's routes: CRM v3 contacts, batch, search and gdpr-delete handlers.

Each handler takes a Starlette request and returns the response plus the records (property
maps) the request carried, so :mod:`adapters.hubspot.sandbox` can log their *names*. A request
HubSpot would refuse as a whole raises :class:`Reject`. Auth, faults and rate limits are not
handled here; :class:`~adapters.hubspot.sandbox.HubSpotSandbox` applies them around each call.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from adapters.hubspot._store import (
    READ_ONLY_PROPERTIES,
    Contact,
    ContactStore,
    SearchError,
    valid_email,
)
from connector import jsonutil
from connector.sandboxkit import JSONResponse

__all__ = [
    "CONTACTS",
    "MAX_SEARCH_RESULTS",
    "PROPERTIES",
    "ContactRoutes",
    "Handler",
    "Reject",
    "error_body",
    "invalid_values",
    "now_stamp",
    "property_definition",
    "read_inputs",
    "read_json",
]

CONTACTS = "/crm/v3/objects/contacts"
PROPERTIES = "/crm/v3/properties/contacts"
MAX_INPUTS = 100
MAX_LIST_LIMIT = 100
MAX_SEARCH_LIMIT = 200
MAX_SEARCH_RESULTS = 10_000
#: Longest ``query`` a search takes, in characters [spec].
MAX_SEARCH_QUERY = 3000

#: A route handler: the response, and the property maps the request carried (for the log).
Handler = Callable[[Request], Awaitable[tuple[Response, list[Mapping[str, Any]]]]]


class Reject(Exception):
    """A whole request HubSpot would refuse; carries what to log about it."""

    def __init__(
        self,
        status: int,
        message: str,
        category: str = "VALIDATION_ERROR",
        records: Sequence[Mapping[str, Any]] = (),
        **extra: Any,
    ) -> None:
        super().__init__(category)
        self.status = status
        self.message = message
        self.category = category
        self.records = list(records)
        self.extra = extra


def error_body(message: str, category: str, **extra: Any) -> dict[str, Any]:
    return {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
        **extra,
    }


def invalid_values(problems: Sequence[tuple[str, str, str]]) -> str:
    """HubSpot's message for property values it refuses: each problem (property name, code,
    text) as JSON after "Property values were not valid: " [doc: error handling]."""
    listed = [
        {"isValid": False, "message": text, "error": code, "name": name}
        for name, code, text in problems
    ]
    return f"Property values were not valid: {json.dumps(listed)}"


def _invalid_email(email: str) -> str:
    return invalid_values([("email", "INVALID_EMAIL", f"Email address {email} is invalid")])


def _properties_of(inputs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for item in inputs:
        props = item.get("properties") if isinstance(item, dict) else None
        out.append(props if isinstance(props, dict) else {})
    return out


def _traced(inputs: Sequence[Mapping[str, Any]]) -> bool:
    """Multi-status (207) applies only when every input has its own ``objectWriteTraceId``."""
    traces = [item.get("objectWriteTraceId") for item in inputs]
    return all(isinstance(t, str) and t for t in traces) and len(set(traces)) == len(traces)


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object body, or the 400 HubSpot answers a malformed one with."""
    try:
        body = jsonutil.loads(await request.body())
    except ValueError:
        raise Reject(400, "Invalid input JSON: the body could not be parsed.") from None
    if not isinstance(body, dict):
        raise Reject(400, "Invalid input JSON: expected an object.")
    return body


async def read_inputs(request: Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A batch request's body and its ``inputs`` (at most :data:`MAX_INPUTS`)."""
    body = await read_json(request)
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise Reject(400, "Invalid input JSON: 'inputs' must be a list of objects.")
    if len(inputs) > MAX_INPUTS:
        raise Reject(
            400,
            f"Too many inputs: {len(inputs)}; a batch takes at most {MAX_INPUTS}.",
            records=_properties_of(inputs),
        )
    return body, inputs


class ContactRoutes:
    """The contact endpoints over one :class:`~adapters.hubspot._store.ContactStore`."""

    def __init__(self, store: ContactStore, search_cap: int = MAX_SEARCH_RESULTS) -> None:
        self.store = store
        #: Most results one search query pages through (HubSpot's 10,000; tests set less).
        self.search_cap = search_cap

    async def _json(self, request: Request) -> dict[str, Any]:
        return await read_json(request)

    async def _inputs(self, request: Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return await read_inputs(request)

    def _check_properties(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Reject the whole request if any record names a property the portal lacks, or gives
        an enumeration a value that is not one of its options."""
        bad = sorted({name for rec in records for name in self.store.bad_property_names(rec)})
        if not bad:
            for rec in records:
                options = self._option_problems(rec)
                if options:
                    raise Reject(
                        400,
                        invalid_values(options),
                        records=records,
                        errors=[
                            {"message": text, "code": code, "context": {"propertyName": [name]}}
                            for name, code, text in options
                        ],
                    )
            return
        codes = [
            "READ_ONLY_VALUE" if name in READ_ONLY_PROPERTIES else "PROPERTY_DOESNT_EXIST"
            for name in bad
        ]
        raise Reject(
            400,
            "Property values were not valid: "
            + ", ".join(f'Property "{name}" does not exist' for name in bad),
            records=records,
            errors=[
                {
                    "message": f'Property "{name}" is not valid',
                    "code": code,
                    "context": {"propertyName": [name]},
                }
                for name, code in zip(bad, codes, strict=True)
            ],
        )

    def _property_problems(
        self, inputs: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]]
    ) -> list[tuple[str, str] | None]:
        """Per input, the 207 entry for the property names it may not carry.

        With a trace id on every input, HubSpot fails only the input naming a property the
        portal lacks, and writes the others [doc: error handling, "Multi-status errors",
        shown for batch create; the fake answers update and upsert alike, as it does their
        e-mail problems]. Without, it refuses the whole batch (:meth:`_check_properties`).
        """
        if not _traced(inputs):
            self._check_properties(records)
            return [None] * len(records)
        return [self._property_problem(record) for record in records]

    def _property_problem(self, record: Mapping[str, Any]) -> tuple[str, str] | None:
        """The VALIDATION_ERROR for a record's bad property names and the values it gives an
        enumeration that are not among its options, worded as HubSpot's."""
        bad = self.store.bad_property_names(record)
        problems = [
            (
                name,
                "READ_ONLY_VALUE" if name in READ_ONLY_PROPERTIES else "PROPERTY_DOESNT_EXIST",
                f'Property "{name}" does not exist',
            )
            for name in bad
        ]
        problems += self._option_problems(record)
        if not problems:
            return None
        return "VALIDATION_ERROR", invalid_values(problems)

    def _option_problems(self, record: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        """HubSpot's ``INVALID_OPTION`` for each value the record gives an enumeration that is
        not one of its options' internal values: it refuses the write (a label, or a value
        the portal never defined, is no option), as it does one naming a property it lacks
        [HubSpot's 400 "Property values were not valid", error ``INVALID_OPTION``, as quoted
        in integrations' bug reports]. Without, a mapping's ``withdrawn`` value that ``check
        --online`` warns of went through here and failed only against HubSpot."""
        options = self.store.options
        # Only the enumerations' values are read: every record of a batch passes here.
        given = {n: _as_text(v) for n, v in record.items() if n in options and v is not None}
        if not given:
            return []
        invalid = self.store.invalid_options(given)
        return [
            (
                name,
                "INVALID_OPTION",
                f"{value} was not one of the allowed options: "
                f"[{', '.join(self.store.options[name])}]",
            )
            for name, value in invalid
        ]

    @staticmethod
    def _strings(properties: Mapping[str, Any]) -> dict[str, str]:
        """Every value as HubSpot stores it: text; ``""`` clears a property. A null is no value
        to write: HubSpot answers it with success and leaves the property as it was (its
        answer on HubSpot/hubspot-api-nodejs#324), so a client that sends null to empty one
        is shown the value still there."""
        return {name: _as_text(value) for name, value in properties.items() if value is not None}

    def _batch_response(
        self,
        results: list[dict[str, Any]],
        errors: list[tuple[str | None, str, str]],
        ok_status: int,
        *,
        unfound: Sequence[dict[str, Any]] = (),
    ) -> Response:
        """``BatchResponse``; 207 with ``errors`` when some inputs failed, ``unfound`` (the
        entries of inputs naming no live contact) among them."""
        now = now_stamp()
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": now,
            "completedAt": now,
        }
        if not errors and not unfound:
            return JSONResponse(body, status_code=ok_status)
        body["numErrors"] = len(errors) + len(unfound)
        body["errors"] = [
            {
                "status": "error",
                "category": category,
                "message": message,
                "context": {"objectWriteTraceId": [trace]} if trace else {},
                "errors": [],
            }
            for trace, category, message in errors
        ] + list(unfound)
        return JSONResponse(body, status_code=207)

    # -- single-object routes ----------------------------------------------------------------

    async def list_properties(self, _request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        """``GET /crm/v3/properties/contacts``: every contact property the portal defines, the
        ones HubSpot sets itself (``createdate``, ``hs_object_id``, ...) among them, as
        HubSpot lists them: ``modificationMetadata.readOnlyValue`` true. An access copy reads
        every property listed, so one left out here was missing from the copy; ``check
        --online`` reads which of them a mapping may write, and an enumeration's options."""
        results = [
            property_definition(
                name, name in READ_ONLY_PROPERTIES, options=self.store.options.get(name)
            )
            for name in sorted(self.store.known | READ_ONLY_PROPERTIES)
        ]
        return JSONResponse({"results": results}), []

    async def list_contacts(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        params = request.query_params
        try:
            limit = int(params.get("limit", "10"))
        except ValueError:
            raise Reject(400, "limit must be a number.") from None
        # The spec states no maximum; HubSpot's SDKs page by 100, so the fake caps there.
        limit = max(1, min(limit, MAX_LIST_LIMIT))
        archived = _archived_flag(request)
        page, after = self.store.page(params.get("after"), limit, archived)
        names = _requested(request)
        body: dict[str, Any] = {"results": [c.to_json(names) for c in page]}
        if after is not None:
            link = f"{request.url.scheme}://{request.url.netloc}{CONTACTS}?after={after}"
            body["paging"] = {"next": {"after": after, "link": link}}
        return JSONResponse(body), []

    async def create(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        body = await self._json(request)
        records = _properties_of([body])
        self._check_properties(records)
        properties = self._strings(records[0])
        email = properties.get("email", "")
        if email and not valid_email(email):
            raise Reject(400, _invalid_email(email), records=records)
        if email and self.store.email_taken(email):
            existing = self.store.live(email, "email")
            assert existing is not None
            raise Reject(
                409,
                f"Contact already exists. Existing ID: {existing.id}",
                "CONFLICT",
                records=records,
            )
        contact = self.store.create(properties)
        return JSONResponse(contact.to_json(sorted(contact.properties)), status_code=201), records

    async def get(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        contact = self._addressed(request, follow=True)
        if contact is None:
            raise Reject(404, "resource not found", "OBJECT_NOT_FOUND")
        return JSONResponse(contact.to_json(_requested(request))), []

    async def patch(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        body = await self._json(request)
        records = _properties_of([body])
        self._check_properties(records)
        contact = self._addressed(request, archived=False)
        if contact is None:
            raise Reject(404, "resource not found", "OBJECT_NOT_FOUND", records=records)
        properties = self._strings(records[0])
        problem = self._email_problem(properties, contact)
        if problem:
            raise Reject(
                400 if problem[0] == "VALIDATION_ERROR" else 409,
                problem[1],
                problem[0],
                records=records,
            )
        self.store.update(contact, properties)
        return JSONResponse(contact.to_json(sorted(contact.properties))), records

    async def delete(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        # HubSpot's DELETE is an archive: restorable for 90 days. 204 even when absent.
        contact = self._addressed(request, archived=False)
        if contact is not None:
            self.store.archive(contact)
        return Response(status_code=204), []

    def _addressed(
        self, request: Request, archived: bool | None = None, *, follow: bool = False
    ) -> Contact | None:
        """The contact the path names; ``follow``: a read, which a merged-away id answers
        with the record it was merged into (:meth:`ContactStore.followed`)."""
        id_value = request.path_params["id"]
        id_property = request.query_params.get("idProperty")
        if archived is None:
            archived = _archived_flag(request)
        if archived:
            return self.store.archived(id_value, id_property)
        if follow and id_property is None:
            return self.store.followed(id_value)
        return self.store.live(id_value, id_property)

    def _email_problem(
        self, properties: Mapping[str, str], contact: Contact | None
    ) -> tuple[str, str] | None:
        email = properties.get("email")
        if email is None:
            return None
        if email and not valid_email(email):
            return "VALIDATION_ERROR", _invalid_email(email)
        if email and self.store.email_taken(email, by_other_than=contact):
            return "CONFLICT", f"A contact with the email {email} already exists."
        return None

    # -- search and GDPR ---------------------------------------------------------------------

    async def search(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        body = await self._json(request)
        try:
            limit = int(body.get("limit", 10))
            offset = int(body.get("after") or 0)
        except (TypeError, ValueError):
            raise Reject(400, "limit and after must be numbers.") from None
        if limit > MAX_SEARCH_LIMIT or limit < 1:
            raise Reject(400, f"limit must be between 1 and {MAX_SEARCH_LIMIT}.")
        if offset >= self.search_cap:
            raise Reject(400, f"Search results are capped at {self.search_cap:,} per query.")
        if len(str(body.get("query") or "")) > MAX_SEARCH_QUERY:
            raise Reject(400, f"query may be at most {MAX_SEARCH_QUERY} characters long.")
        try:
            total, matches = self.store.search(body)
        except SearchError as exc:
            raise Reject(400, str(exc)) from None
        names = body.get("properties") or None
        # Past the cap no result is answered, yet ``paging`` still offers the next page:
        # following it is the 400 above, as HubSpot answers it.
        page = matches[offset : min(offset + limit, self.search_cap)]
        out: dict[str, Any] = {"total": total, "results": [c.to_json(names) for c in page]}
        if offset + limit < total:
            out["paging"] = {"next": {"after": str(offset + limit)}}
        return JSONResponse(out), []

    async def gdpr_delete(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        body = await self._json(request)
        object_id = str(body.get("objectId") or "")
        id_property = body.get("idProperty")
        if not object_id:
            raise Reject(400, "objectId is required.")
        if id_property == "email":
            # By e-mail only the live contact is found. Whether HubSpot also purges archived
            # copies of that e-mail is unverified; the fake takes the cautious view that it
            # does not, so they stay restorable.
            contact = self.store.live(object_id, "email")
            # Found or not, HubSpot blocklists the e-mail and answers 204.
            self.store.blocklist.add(object_id.strip().lower())
        else:
            # By id an archived contact is purged too, as HubSpot's UI can permanently delete
            # from the recycle bin (that the API does is unverified); a contact no longer
            # there, or never there, is a 404.
            contact = self.store.live(object_id) or self.store.archived(object_id)
            if contact is None:
                raise Reject(404, "resource not found", "OBJECT_NOT_FOUND")
        if contact is not None:
            self.store.purge(contact)
        return Response(status_code=204), [{}]

    # -- batch routes ------------------------------------------------------------------------

    async def batch_read(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        body, inputs = await self._inputs(request)
        id_property = body.get("idProperty")
        # ``archived`` is a query flag here, as on the single reads, not a body field [spec].
        # Whether HubSpot finds archived contacts by ``idProperty=email`` is unverified; the
        # fake does, and the adapter does not depend on it (it reads by id as well).
        archived = _archived_flag(request)
        names = body.get("properties") or None
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        for item in inputs:
            id_value = str(item.get("id", ""))
            if archived:
                contact = self.store.archived(id_value, id_property)
            elif id_property is None:
                contact = self.store.followed(id_value)  # a merged-away id: the merged record
            else:
                contact = self.store.live(id_value, id_property)
            if contact is None:
                missing.append(id_value)
            else:
                results.append(contact.to_json(names))
        return batch_read_answer(results, missing, "CONTACT"), []

    async def batch_create(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        _, inputs = await self._inputs(request)
        records = _properties_of(inputs)
        bad_names = self._property_problems(inputs, records)
        values = [self._strings(rec) for rec in records]
        emails = [v.get("email", "").strip().lower() for v in values]
        if len({e for e in emails if e}) < len([e for e in emails if e]):
            raise Reject(400, "Duplicate emails found in batch input.", records=records)
        problems = [
            bad or self._email_problem(v, None) for bad, v in zip(bad_names, values, strict=True)
        ]
        errors = self._per_input_errors(inputs, problems, records)
        results = [
            self.store.create(v).to_json(sorted(v), inputs[i].get("objectWriteTraceId"))
            for i, v in enumerate(values)
            if problems[i] is None
        ]
        return self._batch_response(results, errors, 201), records

    async def batch_update(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        body, inputs = await self._inputs(request)
        records = _properties_of(inputs)
        bad_names = self._property_problems(inputs, records)
        ids = [
            (str(i.get("id", "")), i.get("idProperty") or body.get("idProperty")) for i in inputs
        ]
        _refuse_duplicates(
            [value.strip().lower() if prop == "email" else value for value, prop in ids], records
        )
        targets = [self.store.live(id_value, prop) for id_value, prop in ids]
        values = [self._strings(rec) for rec in records]
        problems: list[tuple[str, str] | None] = [
            bad or (None if target is None else self._email_problem(v, target))
            for bad, target, v in zip(bad_names, targets, values, strict=True)
        ]
        errors = self._per_input_errors(inputs, problems, records)
        unfound = [
            index
            for index, target in enumerate(targets)
            if target is None and problems[index] is None
        ]
        results = []
        for index, target in enumerate(targets):
            if problems[index] is None and target is not None:
                self.store.update(target, values[index])
                trace = inputs[index].get("objectWriteTraceId")
                results.append(target.to_json(sorted(values[index]), trace))
        response = self._batch_response(
            results, errors, 200, unfound=_unfound_entries(inputs, ids, unfound)
        )
        return response, records

    async def batch_upsert(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        _, inputs = await self._inputs(request)
        records = _properties_of(inputs)
        bad_names = self._property_problems(inputs, records)
        if any(item.get("idProperty") != "email" for item in inputs):
            raise Reject(400, "Upsert takes idProperty=email only.", records=records)
        emails = [str(item.get("id", "")).strip().lower() for item in inputs]
        _refuse_duplicates(emails, records)
        problems: list[tuple[str, str] | None] = [
            bad or (None if valid_email(email) else ("VALIDATION_ERROR", _invalid_email(email)))
            for bad, email in zip(bad_names, emails, strict=True)
        ]
        errors = self._per_input_errors(inputs, problems, records)
        results = []
        for index, email in enumerate(emails):
            if problems[index] is not None:
                continue
            values = self._strings(records[index])
            values["email"] = email
            contact = self.store.live(email, "email")
            new = contact is None
            if contact is None:
                contact = self.store.create(values)
            else:
                self.store.update(contact, values)
            result = contact.to_json(sorted(values), inputs[index].get("objectWriteTraceId"))
            result["new"] = new
            results.append(result)
        return self._batch_response(results, errors, 200), records

    async def batch_archive(self, request: Request) -> tuple[Response, list[Mapping[str, Any]]]:
        _, inputs = await self._inputs(request)
        for item in inputs:
            contact = self.store.live(str(item.get("id", "")))
            if contact is not None:
                self.store.archive(contact)  # restorable, like DELETE
        return Response(status_code=204), [{} for _ in inputs]

    def _per_input_errors(
        self,
        inputs: Sequence[Mapping[str, Any]],
        problems: Sequence[tuple[str, str] | None],
        records: Sequence[Mapping[str, Any]],
    ) -> list[tuple[str | None, str, str]]:
        """Per-input failures as 207 entries, or the whole batch refused without trace ids."""
        failed = [(i, p) for i, p in enumerate(problems) if p is not None]
        if not failed:
            return []
        if not _traced(inputs):
            category, message = failed[0][1]
            status = 409 if category == "CONFLICT" else 400
            raise Reject(status, message, category, records=records)
        return [(inputs[i].get("objectWriteTraceId"), p[0], p[1]) for i, p in failed]


#: How HubSpot types the properties it sets itself and its enumerations; every other one the
#: fake defines is text, and a custom enumeration a dropdown (``select``).
_TYPES: Mapping[str, tuple[str, str]] = {
    "createdate": ("datetime", "date"),
    "lastmodifieddate": ("datetime", "date"),
    "hs_createdate": ("datetime", "date"),
    "hs_lastmodifieddate": ("datetime", "date"),
    "hs_object_id": ("number", "number"),
    "lifecyclestage": ("enumeration", "radio"),
    "hs_legal_basis": ("enumeration", "checkbox"),
}


def property_definition(
    name: str,
    read_only: bool,
    group: str = "contactinformation",
    *,
    options: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One property definition in the Properties API's shape; ``options`` (their values)
    make it an enumeration. HubSpot lists ``options`` with every property, empty but for
    enumerations."""
    default = ("enumeration", "select") if options is not None else ("string", "text")
    kind, field_type = _TYPES.get(name, default)
    return {
        "name": name,
        "label": name,
        "type": kind,
        "fieldType": field_type,
        "groupName": group,
        "hidden": False,
        "options": [
            {"label": value, "value": value, "displayOrder": order, "hidden": False}
            for order, value in enumerate(options or ())
        ],
        "modificationMetadata": {
            "archivable": not read_only,
            "readOnlyDefinition": read_only,
            "readOnlyValue": read_only,
        },
    }


def _archived_flag(request: Request) -> bool:
    """The ``archived`` query flag: true reads archived (recycle bin) contacts *only*."""
    return request.query_params.get("archived", "false").lower() == "true"


def _requested(request: Request) -> list[str] | None:
    """The ``properties`` query values (repeated or comma-separated), or ``None``."""
    values = request.query_params.getlist("properties")
    names = [name for value in values for name in value.split(",") if name]
    return names or None


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _refuse_duplicates(ids: Sequence[str], records: Sequence[Mapping[str, Any]]) -> None:
    """HubSpot's 400 for a batch naming one record twice: the whole batch refused, the ids
    named in its message and ``context.ids`` (HubSpot's answer as recorded in integrations'
    test fixtures: "Duplicate IDs found in batch input: [123456]. IDs must be unique")."""
    if len(set(ids)) == len(ids):
        return
    counts = Counter(ids)
    named = [value for value in dict.fromkeys(ids) if counts[value] > 1]
    raise Reject(
        400,
        f"Duplicate IDs found in batch input: [{', '.join(named)}]. IDs must be unique",
        records=records,
        context={"ids": named},
    )


#: HubSpot's words for ids it holds no (live) object under, in a batch read's or update's 207.
_UNFOUND_MESSAGE = (
    "Could not get some {noun} objects, they may be deleted or not exist. Check that ids are valid."
)


def _unfound_entries(
    inputs: Sequence[Mapping[str, Any]],
    ids: Sequence[tuple[str, Any]],
    unfound: Sequence[int],
) -> list[dict[str, Any]]:
    """The 207 entries of a ``batch/update`` for inputs naming no live contact.

    HubSpot writes the rest and names these by the ids they were sent with
    (``context.ids``), with or without trace ids: a missing record never refuses the whole
    batch (HubSpot's answers as recorded in integrations' test fixtures). A traced input's
    entry also carries its ``objectWriteTraceId``, one entry each.
    """
    if not unfound:
        return []
    message = _UNFOUND_MESSAGE.format(noun="CONTACT")
    if not _traced(inputs):
        context: dict[str, Any] = {"ids": [ids[index][0] for index in unfound]}
        return [_unfound_entry(message, context)]
    return [
        _unfound_entry(
            message,
            {"objectWriteTraceId": [inputs[index]["objectWriteTraceId"]], "ids": [ids[index][0]]},
        )
        for index in unfound
    ]


def _unfound_entry(message: str, context: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": message,
        "context": context,
        "errors": [],
    }


def batch_read_answer(results: list[dict[str, Any]], missing: list[str], noun: str) -> Response:
    """A ``batch/read`` answer: 200 with the records found, else 207 naming the ids of
    ``noun`` objects (``CONTACT``, ``NOTE``) not found, as HubSpot words it."""
    now = now_stamp()
    out: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": now,
        "completedAt": now,
    }
    if not missing:
        return JSONResponse(out)
    out["numErrors"] = 1
    out["errors"] = [
        {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": _UNFOUND_MESSAGE.format(noun=noun),
            "context": {"ids": missing},
            "errors": [],
        }
    ]
    return JSONResponse(out, status_code=207)


def now_stamp() -> str:
    """Now as a batch answer's ``startedAt`` and ``completedAt`` say it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
