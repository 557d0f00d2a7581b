"""The part of Shopify's GraphQL Admin schema the sandbox serves: types, checks, execution.

Types and fields follow the Admin API names (``Customer``, ``MailingAddress``,
``CustomerRequestDataErasurePayload``, ...). Fields outside this part are refused the way
Shopify refuses unknown fields (``undefinedField``), and so are a missing required argument,
a variable declared and not used, and a variable or literal of another type than its
argument's, with the codes Shopify's validation answers, so an adapter query that would fail
against Shopify fails here too.

While it runs, the executor counts ``actualQueryCost`` by the rules in ``_cost.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from adapters.shopify._graphql import EnumValue, Field, Operation, Variable, value_of
from adapters.shopify._store import (
    CUSTOMER,
    GraphQLError,
    ShopStore,
    Slice,
    gid,
    numeric_id,
    older_than,
    paginate,
)

__all__ = ["MAX_PAGE", "MUTATION_COST", "Executor", "Spec"]

MAX_PAGE = 250  # connection page ceiling (UNVERIFIED in our reference; see settings.py)
MUTATION_COST = 10

#: Shopify: "Only the last 60 days' worth of orders from a store are accessible from the
#: Order object by default"; older ones need the ``read_all_orders`` scope.
ORDERS_WINDOW_DAYS = 60

Kind = Literal["scalar", "object", "list", "connection"]
Resolver = Callable[[Mapping[str, Any], dict[str, Any]], Any]


@dataclass(frozen=True)
class Spec:
    """One field of a type: what it returns, its arguments (name -> GraphQL type, ``!``
    for a required one) and, where it is computed, how."""

    kind: Kind = "scalar"
    type: str | None = None
    args: Mapping[str, str] = field(default_factory=dict)
    resolve: Resolver | None = None


def _scalars(*names: str) -> dict[str, Spec]:
    return {name: Spec() for name in names}


_PAGING: Mapping[str, str] = {
    "first": "Int",
    "after": "String",
    "last": "Int",
    "before": "String",
    "reverse": "Boolean",
}

#: ``CustomerSortKeys`` [doc], each with the value the fake sorts customers by (ties, and
#: the keys it does not model, in id order). How Shopify orders ``NAME`` (first name
#: first, here) and ``LOCATION`` is not documented; ``RELEVANCE`` matters only to a
#: ``query``.
CUSTOMER_SORT_KEYS: Mapping[str, Callable[[dict[str, Any]], Any]] = {
    "ID": lambda _c: 0,
    "UPDATED_AT": lambda c: c["updatedAt"],
    "CREATED_AT": lambda c: c["createdAt"],
    "NAME": lambda c: f"{c.get('firstName') or ''} {c.get('lastName') or ''}".strip().lower(),
    "LOCATION": lambda _c: 0,
    "RELEVANCE": lambda _c: 0,
}

#: The enum types of the arguments above; a value of one is written as a bare name.
_ENUMS = frozenset({"CustomerSortKeys", "OrderSortKeys"})

#: The input object types of the arguments above; a value of one is written ``{ ... }``.
_INPUTS = frozenset({"CustomerDeleteInput"})
_ADDRESS = _scalars(
    "id",
    "address1",
    "address2",
    "city",
    "zip",
    "province",
    "provinceCode",
    "country",
    "countryCodeV2",
    "company",
    "phone",
    "firstName",
    "lastName",
    "name",
)


@dataclass
class Executor:
    """Validates, prices and runs one operation against a :class:`ShopStore`.

    Args:
        store: the data.
        now: the current time as Shopify prints it (for erasure bookkeeping and the
            orders window).
        all_orders: the token holds ``read_all_orders``: orders of any age are served.
    """

    store: ShopStore
    now: Callable[[], str]
    all_orders: bool = False
    operations: list[str] = field(default_factory=list)
    _actual: int = 0

    # -- the schema ------------------------------------------------------------------------

    def types(self) -> dict[str, dict[str, Spec]]:
        """Type name -> field name -> :class:`Spec`."""
        store = self.store
        return {
            "QueryRoot": {
                "customers": Spec(
                    "connection",
                    "Customer",
                    {**_PAGING, "query": "String", "sortKey": "CustomerSortKeys"},
                    self._customers,
                ),
                "customer": Spec(
                    "object", "Customer", {"id": "ID!"}, lambda _, a: store.customer(a["id"])
                ),
                "order": Spec("object", "Order", {"id": "ID!"}, self._order),
            },
            "Mutation": {
                "customerRequestDataErasure": Spec(
                    "object",
                    "CustomerRequestDataErasurePayload",
                    {"customerId": "ID!"},
                    self._request_erasure,
                ),
                "customerCancelDataErasure": Spec(
                    "object",
                    "CustomerCancelDataErasurePayload",
                    {"customerId": "ID!"},
                    self._cancel_erasure,
                ),
                "customerDelete": Spec(
                    "object",
                    "CustomerDeletePayload",
                    {"input": "CustomerDeleteInput!"},
                    self._delete,
                ),
            },
            "Customer": {
                **_scalars(
                    "id",
                    "legacyResourceId",
                    "email",
                    "firstName",
                    "lastName",
                    "displayName",
                    "phone",
                    "createdAt",
                    "updatedAt",
                    "note",
                    "tags",
                    "state",
                    "verifiedEmail",
                    "taxExempt",
                    "locale",
                    "numberOfOrders",
                    "dataSaleOptOut",
                ),
                "amountSpent": Spec("object", "MoneyV2"),
                "emailMarketingConsent": Spec("object", "CustomerEmailMarketingConsentState"),
                "smsMarketingConsent": Spec("object", "CustomerSmsMarketingConsentState"),
                "defaultAddress": Spec("object", "MailingAddress"),
                "addresses": Spec(
                    "list",
                    "MailingAddress",
                    {"first": "Int"},
                    lambda c, a: c.get("addresses", [])[: a.get("first") or None],
                ),
                "orders": Spec(
                    "connection",
                    "Order",
                    {**_PAGING, "sortKey": "OrderSortKeys", "query": "String"},
                    self._orders,
                ),
            },
            "Order": {
                **_scalars(
                    "id",
                    "legacyResourceId",
                    "name",
                    "createdAt",
                    "updatedAt",
                    "email",
                    "phone",
                    "note",
                ),
                "customAttributes": Spec("list", "Attribute"),
                "totalPriceSet": Spec("object", "MoneyBag"),
                "billingAddress": Spec("object", "MailingAddress"),
                "shippingAddress": Spec("object", "MailingAddress"),
                "customer": Spec(
                    "object",
                    "Customer",
                    resolve=lambda o, _: store.customers.get(o["_customer"] or 0),
                ),
                "lineItems": Spec("connection", "LineItem", _PAGING, self._line_items),
            },
            "LineItem": _scalars("id", "title", "quantity", "sku", "name"),
            "Attribute": _scalars("key", "value"),
            "MailingAddress": _ADDRESS,
            "MoneyV2": _scalars("amount", "currencyCode"),
            "MoneyBag": {
                "shopMoney": Spec("object", "MoneyV2"),
                "presentmentMoney": Spec("object", "MoneyV2"),
            },
            "CustomerEmailMarketingConsentState": _scalars(
                "marketingState", "marketingOptInLevel", "consentUpdatedAt"
            ),
            "CustomerSmsMarketingConsentState": _scalars(
                "marketingState", "marketingOptInLevel", "consentUpdatedAt", "consentCollectedFrom"
            ),
            "PageInfo": _scalars("hasNextPage", "hasPreviousPage", "startCursor", "endCursor"),
            "CustomerRequestDataErasurePayload": {
                "customerId": Spec(),
                "userErrors": Spec("list", "CustomerRequestDataErasureUserError"),
            },
            "CustomerCancelDataErasurePayload": {
                "customerId": Spec(),
                "userErrors": Spec("list", "CustomerCancelDataErasureUserError"),
            },
            "CustomerRequestDataErasureUserError": _scalars("field", "message", "code"),
            "CustomerCancelDataErasureUserError": _scalars("field", "message", "code"),
            "CustomerDeletePayload": {
                "deletedCustomerId": Spec(),
                "shop": Spec("object", "Shop"),
                "userErrors": Spec("list", "UserError"),
            },
            "Shop": _scalars("id", "name", "myshopifyDomain"),
            "UserError": _scalars("field", "message"),
        }

    # -- resolvers -------------------------------------------------------------------------

    def _customers(self, _: Mapping[str, Any], args: dict[str, Any]) -> Slice:
        found = self.store.search_customers(args.get("query"))
        sort_key = str(args.get("sortKey") or "ID")
        if sort_key not in CUSTOMER_SORT_KEYS:
            raise GraphQLError(
                f"Argument 'sortKey' on Field 'customers' has an invalid value ({sort_key}).",
                "argumentLiteralsIncompatible",
            )
        return paginate(found, CUSTOMER_SORT_KEYS[sort_key], CUSTOMER, args, MAX_PAGE)

    def _readable(self, order: Mapping[str, Any]) -> bool:
        """Whether the token may read the order (see ``ORDERS_WINDOW_DAYS``)."""
        return self.all_orders or not older_than(
            order.get("createdAt"), ORDERS_WINDOW_DAYS, self.now()
        )

    def _order(self, _: Mapping[str, Any], args: dict[str, Any]) -> dict[str, Any] | None:
        order = self.store.order(args["id"])
        return order if order is not None and self._readable(order) else None

    def _orders(self, customer: Mapping[str, Any], args: dict[str, Any]) -> Slice:
        number = numeric_id(customer["id"], CUSTOMER) or 0
        readable = [o for o in self.store.orders_of(number) if self._readable(o)]
        return paginate(readable, lambda _: 0, "Order", args, MAX_PAGE)

    def _line_items(self, order: Mapping[str, Any], args: dict[str, Any]) -> Slice:
        return paginate(list(order["lineItems"]), lambda _: 0, "LineItem", args, MAX_PAGE)

    def _request_erasure(self, _: Mapping[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        customer = self.store.customer(args.get("customerId"))
        if customer is None:
            return _user_error("Customer does not exist", "DOES_NOT_EXIST")
        number = numeric_id(customer["id"], CUSTOMER)
        assert number is not None
        # Asking again while one is pending is accepted and changes nothing (UNVERIFIED:
        # Shopify's answer to a repeated request is not documented).
        self.store.pending_erasures.setdefault(number, self.now())
        return {"customerId": customer["id"], "userErrors": []}

    def _cancel_erasure(self, _: Mapping[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        customer = self.store.customer(args.get("customerId"))
        if customer is None:
            return _user_error("Customer does not exist", "DOES_NOT_EXIST")
        number = numeric_id(customer["id"], CUSTOMER)
        if self.store.pending_erasures.pop(number or 0, None) is None:
            return {
                **_user_error("Customer's data is not scheduled for erasure", "NOT_BEING_ERASED"),
                "customerId": customer["id"],
            }
        return {"customerId": customer["id"], "userErrors": []}

    def _delete(self, _: Mapping[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        given = args.get("input")
        customer = self.store.customer(given.get("id") if isinstance(given, dict) else None)
        shop = {"id": gid("Shop", 1), "name": "Sandbox", "myshopifyDomain": "sandbox"}
        if customer is None:
            error = {"field": ["id"], "message": "Customer does not exist"}
            return {"deletedCustomerId": None, "shop": shop, "userErrors": [error]}
        number = numeric_id(customer["id"], CUSTOMER) or 0
        if self.store.orders_of(number):
            # customerDelete refuses anyone who has ever ordered (shopify.dev customerDelete).
            error = {
                "field": ["id"],
                "message": "Customer can't be deleted because they have associated orders",
            }
            return {"deletedCustomerId": None, "shop": shop, "userErrors": [error]}
        del self.store.customers[number]
        return {"deletedCustomerId": customer["id"], "shop": shop, "userErrors": []}

    # -- validation ------------------------------------------------------------------------

    def validate(self, operation: Operation, variables: dict[str, Any]) -> list[GraphQLError]:
        """Static checks, as Shopify makes them before it runs anything: fields and arguments
        exist, required arguments are given, literals and variables are of their arguments'
        types, every variable is declared and used, selections fit, variables are given."""
        errors: list[GraphQLError] = []
        types = self.types()
        root = "Mutation" if operation.kind == "mutation" else "QueryRoot"
        used: list[_Usage] = []
        self._check(types, root, operation.selections, [], errors, used)
        names = {usage.name for usage in used}
        for name in sorted(names - set(operation.variables)):
            errors.append(
                GraphQLError(f"Variable ${name} is used but not declared", "variableNotDefined")
            )
        for name in operation.variables:
            if name not in names:
                errors.append(
                    GraphQLError(
                        f"Variable ${name} is declared by {operation.name or 'anonymous query'} "
                        "but not used",
                        "variableNotUsed",
                    )
                )
        for usage in used:
            if usage.name in operation.variables and usage.expected is not None:
                declared, default = operation.variables[usage.name]
                problem = _variable_mismatch(declared, default, usage.expected)
                if problem:
                    errors.append(
                        GraphQLError(
                            f"{problem} on variable ${usage.name} and argument "
                            f"{usage.argument} ({declared} / {usage.expected})",
                            "variableMismatch",
                            usage.path,
                        )
                    )
        for name, (type_text, default) in operation.variables.items():
            if type_text.endswith("!") and variables.get(name, default) is None:
                errors.append(
                    GraphQLError(
                        f"Variable ${name} of type {type_text} was provided invalid value",
                        "INVALID_VARIABLE",
                    )
                )
        return errors

    def _check(
        self,
        types: dict[str, dict[str, Spec]],
        type_name: str,
        selections: list[Field],
        path: list[str],
        errors: list[GraphQLError],
        used: list[_Usage],
    ) -> None:
        for selected in selections:
            where = [*path, selected.key]
            spec = types[type_name].get(selected.name)
            if spec is None:
                errors.append(
                    GraphQLError(
                        f"Field '{selected.name}' doesn't exist on type '{type_name}'",
                        "undefinedField",
                        where,
                    )
                )
                continue
            for argument, value in selected.arguments.items():
                expected = spec.args.get(argument)
                if isinstance(value, Variable):
                    used.append(_Usage(value.name, argument, expected, where))
                else:
                    # Inside a list or an input object: used, of a type this part does not say.
                    used += [_Usage(n, argument, None, where) for n in _variables_in(value)]
                if expected is None:
                    errors.append(
                        GraphQLError(
                            f"Field '{selected.name}' doesn't accept argument '{argument}'",
                            "argumentNotAccepted",
                            where,
                        )
                    )
                elif not isinstance(value, Variable) and not _literal_fits(value, expected):
                    errors.append(
                        GraphQLError(
                            f"Argument '{argument}' on Field '{selected.name}' has an invalid "
                            f"value. Expected type '{expected}'.",
                            "argumentLiteralsIncompatible",
                            where,
                        )
                    )
            missing = [
                argument
                for argument, expected in spec.args.items()
                if expected.endswith("!") and argument not in selected.arguments
            ]
            if missing:
                errors.append(
                    GraphQLError(
                        f"Field '{selected.name}' is missing required arguments: "
                        f"{', '.join(missing)}",
                        "missingRequiredArguments",
                        where,
                    )
                )
            if spec.kind == "scalar":
                if selected.selections:
                    errors.append(
                        GraphQLError(
                            f"Selections can't be made on scalars (field '{selected.name}')",
                            "selectionMismatch",
                            where,
                        )
                    )
                continue
            if not selected.selections:
                errors.append(
                    GraphQLError(
                        f"Field must have selections (field '{selected.name}')",
                        "selectionMismatch",
                        where,
                    )
                )
                continue
            assert spec.type is not None
            if spec.kind != "connection":
                self._check(types, spec.type, selected.selections, where, errors, used)
                continue
            for part in selected.selections:
                inner = [*where, part.key]
                if part.name == "nodes" and part.selections:
                    self._check(types, spec.type, part.selections, inner, errors, used)
                elif part.name == "pageInfo" and part.selections:
                    self._check(types, "PageInfo", part.selections, inner, errors, used)
                elif part.name == "edges" and part.selections:
                    for edge in part.selections:
                        if edge.name == "node" and edge.selections:
                            self._check(types, spec.type, edge.selections, inner, errors, used)
                        elif edge.name != "cursor" or edge.selections:
                            errors.append(
                                GraphQLError(
                                    f"Field '{edge.name}' doesn't exist on type '{spec.type}Edge'",
                                    "undefinedField",
                                    inner,
                                )
                            )
                else:
                    errors.append(
                        GraphQLError(
                            f"Field '{part.name}' doesn't exist on type '{spec.type}Connection'",
                            "undefinedField",
                            inner,
                        )
                    )

    # -- execution -------------------------------------------------------------------------

    def execute(
        self, operation: Operation, variables: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        """Run a validated operation; return ``data`` and its actual cost.

        Raises:
            GraphQLError: a resolver refused its arguments.
        """
        types = self.types()
        root = "Mutation" if operation.kind == "mutation" else "QueryRoot"
        self._actual = 0
        for selected in operation.selections:
            self.operations.append(f"{operation.kind} {selected.name}")
        data = self._run(types, root, operation.selections, {}, variables, [])
        if operation.kind == "mutation":
            self._actual += (MUTATION_COST - 1) * len(operation.selections)
        return data, self._actual

    def _run(
        self,
        types: dict[str, dict[str, Spec]],
        type_name: str,
        selections: list[Field],
        parent: Mapping[str, Any],
        variables: dict[str, Any],
        path: list[str],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for selected in selections:
            spec = types[type_name][selected.name]
            args = {k: value_of(v, variables) for k, v in selected.arguments.items()}
            where = [*path, selected.key]
            try:
                value = spec.resolve(parent, args) if spec.resolve else parent.get(selected.name)
            except GraphQLError as error:
                error.path = where
                raise
            sub = selected.selections or []
            if spec.kind == "scalar" or spec.type is None:
                out[selected.key] = list(value) if isinstance(value, list) else value
            elif spec.kind == "object":
                if value is None:
                    out[selected.key] = None
                else:
                    self._actual += 1
                    out[selected.key] = self._run(types, spec.type, sub, value, variables, where)
            elif spec.kind == "list":
                self._actual += 1
                out[selected.key] = [
                    self._run(types, spec.type, sub, item, variables, where) for item in value or []
                ]
            else:
                assert isinstance(value, Slice)  # every connection resolver returns one
                out[selected.key] = self._connection(
                    types, spec.type, selected, value, variables, where
                )
        return out

    def _connection(
        self,
        types: dict[str, dict[str, Spec]],
        node_type: str,
        selected: Field,
        page: Slice,
        variables: dict[str, Any],
        path: list[str],
    ) -> dict[str, Any]:
        self._actual += 2 + len(page.items)
        out: dict[str, Any] = {}
        for part in selected.selections or []:
            sub = part.selections or []
            if part.name == "nodes":
                out[part.key] = [
                    self._run(types, node_type, sub, item, variables, path) for item in page.items
                ]
            elif part.name == "edges":
                edges = []
                for item, cursor in zip(page.items, page.cursors, strict=True):
                    edge: dict[str, Any] = {}
                    for piece in sub:
                        edge[piece.key] = (
                            cursor
                            if piece.name == "cursor"
                            else self._run(
                                types, node_type, piece.selections or [], item, variables, path
                            )
                        )
                    edges.append(edge)
                out[part.key] = edges
            else:  # pageInfo
                self._actual += 1
                info = {
                    "hasNextPage": page.has_next,
                    "hasPreviousPage": page.has_previous,
                    "startCursor": page.cursors[0] if page.cursors else None,
                    "endCursor": page.cursors[-1] if page.cursors else None,
                }
                out[part.key] = {p.key: info[p.name] for p in sub}
        return out


def _user_error(message: str, code: str) -> dict[str, Any]:
    return {
        "customerId": None,
        "userErrors": [{"field": ["customerId"], "message": message, "code": code}],
    }


@dataclass(frozen=True)
class _Usage:
    """A variable used as an argument: where, and the type the argument takes (``None``
    inside a list or an input object, whose member types this part does not keep)."""

    name: str
    argument: str
    expected: str | None
    path: list[str]


def _variable_mismatch(declared: str, default: Any, expected: str) -> str | None:
    """Why a variable of type ``declared`` cannot be given to an argument of type
    ``expected`` (GraphQL's "All Variable Usages Are Allowed"), or ``None`` when it can."""
    if expected.endswith("!") and not declared.endswith("!") and default is None:
        return "Nullability mismatch"
    if declared.rstrip("!") != expected.rstrip("!"):
        return "Type mismatch"
    return None


def _literal_fits(value: Any, expected: str) -> bool:
    """Whether a literal (no variable at its top) is a value of the argument type
    ``expected``; what is inside a list or an input object is not looked into."""
    if value is None:
        return not expected.endswith("!")
    base = expected.rstrip("!")
    if base in _ENUMS:
        return isinstance(value, EnumValue)
    if base in _INPUTS:
        return isinstance(value, dict)
    if base == "Boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if base == "Int":
        return isinstance(value, int)
    if base == "ID":
        return isinstance(value, str | int)
    return isinstance(value, str)  # String


def _variables_in(value: Any) -> set[str]:
    if isinstance(value, Variable):
        return {value.name}
    if isinstance(value, list):
        return set().union(*(_variables_in(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(_variables_in(v) for v in value.values())) if value else set()
    return set()
