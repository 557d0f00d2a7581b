"""The access scopes Shopify's Admin API asks of the calls klantsync makes.

One table for the adapter (a refused call's error names the scope to grant) and the sandbox
(it answers ``ACCESS_DENIED``, as Shopify does, for a field its token lacks the scope for).
Shopify refuses such a field inside an HTTP 200, with ``errors[].extensions.code ==
"ACCESS_DENIED"`` and the scope named in the message (``Access denied for customerCreate
field. Required access: `write_customers` access scope.``) and in
``extensions.requiredAccess`` [3p: an answer quoted on Shopify's community forum], which an
error never carries: the adapter names the scope from this table instead.

"Any scope that writes a resource also grants read access to it" [doc: shopify.dev access
scopes]: a ``write_`` scope stands for its ``read_`` one (:func:`granted`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final

from connector.scopes import ScopeRefusal, naming_scope

if TYPE_CHECKING:
    from adapters.shopify._graphql import Field
    from adapters.shopify._schema import Spec

__all__ = [
    "ACCESS_DENIED",
    "ERASURE_SCOPE",
    "FIELD_SCOPES",
    "READ_CUSTOMERS",
    "READ_ORDERS",
    "TYPE_SCOPES",
    "access_denied",
    "granted",
    "needing",
]

#: Shopify's error code for a field the app's token lacks the scope for.
ACCESS_DENIED: Final = "ACCESS_DENIED"

#: What reads a customer: a page of a pull, a search by e-mail, a read by id
#: (UNVERIFIED: not re-read on the Customer object's page).
READ_CUSTOMERS: Final = "read_customers"

#: What reads a customer's orders and an order's line items [doc: the Order object needs
#: ``read_orders`` (or ``write_orders``)]. Orders older than 60 days need
#: ``read_all_orders`` besides, which Shopify does not refuse a call for: it serves fewer.
READ_ORDERS: Final = "read_orders"

#: What ``customerRequestDataErasure`` needs [doc: the mutation's page, 2024-07]. Its
#: ``userErrors``, whose codes the erasure reads, need ``read_customer_data_erasure`` [doc:
#: CustomerRequestDataErasureUserError], which this write scope grants.
ERASURE_SCOPE: Final = "write_customer_data_erasure"

#: The scope reading any field of a type needs, by the type's name.
TYPE_SCOPES: Final[Mapping[str, str]] = {
    "Customer": READ_CUSTOMERS,
    "Order": READ_ORDERS,
    "LineItem": READ_ORDERS,
    "CustomerRequestDataErasureUserError": "read_customer_data_erasure",
    "CustomerCancelDataErasureUserError": "read_customer_data_erasure",  # UNVERIFIED
}

#: The scope a mutation needs, by its name. ``customerCancelDataErasure``'s is taken to be
#: its request's, ``customerDelete``'s to be ``write_customers`` (both UNVERIFIED).
FIELD_SCOPES: Final[Mapping[str, str]] = {
    "customerRequestDataErasure": ERASURE_SCOPE,
    "customerCancelDataErasure": ERASURE_SCOPE,
    "customerDelete": "write_customers",
}

#: Where Shopify's answer points the operator to (as quoted, see above).
_DOCUMENTATION: Final = "https://shopify.dev/api/usage/access-scopes"

#: Shopify's refusal of a call for a missing scope: ``ACCESS_DENIED``, granted to the app.
REFUSAL: Final = ScopeRefusal(ACCESS_DENIED, "the app")


def granted(scope: str, scopes: Collection[str]) -> bool:
    """Whether a token holding ``scopes`` holds ``scope``: itself, or the ``write_`` scope
    of a ``read_`` one."""
    return scope in scopes or (
        scope.startswith("read_") and "write_" + scope.removeprefix("read_") in scopes
    )


def needing(*scopes: str) -> AbstractContextManager[None]:
    """Run a call that needs ``scopes``; Shopify's ``ACCESS_DENIED`` is raised naming them.

    The error said ``ACCESS_DENIED`` and no more, so the operator could not tell what to
    grant the app for a pull, an access copy's orders or an erasure to go through.

    Raises:
        FatalRemoteError: the refusal, its detail naming ``scopes``; other errors as they were.
    """
    return naming_scope(REFUSAL, *scopes)


def access_denied(
    types: Mapping[str, Mapping[str, Spec]],
    root: str,
    selections: list[Field],
    scopes: Collection[str],
) -> list[dict[str, Any]]:
    """Shopify's ``ACCESS_DENIED`` error for each field of a valid operation that a token
    holding ``scopes`` may not read (a mutation its scope, a field its type's scope); none
    when it may read them all. Under a refused field nothing more is refused."""
    errors: list[dict[str, Any]] = []

    def walk(type_name: str, fields: list[Field], path: list[str]) -> None:
        for selected in fields:
            spec = types[type_name][selected.name]
            where = [*path, selected.key]
            needed = [FIELD_SCOPES.get(selected.name) if type_name == "Mutation" else None]
            needed.append(TYPE_SCOPES.get(spec.type or ""))
            missing = [scope for scope in needed if scope and not granted(scope, scopes)]
            if missing:
                errors.append(_denial(selected, where, missing[0]))
                continue
            if spec.type is None or not selected.selections:
                continue
            if spec.kind != "connection":
                walk(spec.type, selected.selections, where)
                continue
            for part in selected.selections:
                inner = [*where, part.key]
                if part.name == "nodes" and part.selections:
                    walk(spec.type, part.selections, inner)
                elif part.name == "edges":
                    for edge in part.selections or []:
                        if edge.name == "node" and edge.selections:
                            walk(spec.type, edge.selections, [*inner, edge.key])

    walk(root, selections, [])
    return errors


def _denial(selected: Field, path: list[str], scope: str) -> dict[str, Any]:
    required = f"`{scope}` access scope."
    return {
        "message": f"Access denied for {selected.name} field. Required access: {required}",
        "locations": [{"line": selected.line, "column": selected.column}],
        "path": path,
        "extensions": {
            "code": ACCESS_DENIED,
            "documentation": _DOCUMENTATION,
            "requiredAccess": required,
        },
    }
