"""The calculated-cost side of the Shopify sandbox: what a query costs, and the bucket.

Cost model (Shopify's published rules, simplified): a scalar or enum costs 0, an object 1,
a connection ``2 + size x (1 + cost of one node's selection)`` where ``size`` is ``first``
or ``last``, ``pageInfo`` 1, and a mutation's root field 10. ``requestedQueryCost`` applies
the rules to the document before it runs (:func:`requested_cost`); the executor counts
``actualQueryCost`` over what it returned. The bucket leaks back at the plan's restore rate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapters.shopify._graphql import Field, Operation, value_of
from adapters.shopify._schema import MUTATION_COST, Spec

__all__ = ["CostBucket", "requested_cost"]


class CostBucket:
    """Shopify's leaky bucket of query-cost points for one app and store.

    Args:
        maximum: bucket size in points.
        restore_rate: points restored per second.
        clock: monotonic seconds (injectable: tests step it instead of sleeping).
    """

    def __init__(self, maximum: float, restore_rate: float, clock: Callable[[], float]) -> None:
        self.maximum = maximum
        self.restore_rate = restore_rate
        self.clock = clock
        self._available = maximum
        self._at = clock()

    def available(self) -> float:
        """Points in the bucket now."""
        now = self.clock()
        self._available = min(self.maximum, self._available + (now - self._at) * self.restore_rate)
        self._at = now
        return self._available

    def take(self, points: float) -> bool:
        """Take ``points`` if the bucket holds them; return whether it did."""
        if self.available() < points:
            return False
        self._available -= points
        return True

    def refund(self, points: float) -> None:
        """Give back what a query was charged beyond its actual cost."""
        self._available = min(self.maximum, self.available() + points)

    def status(self) -> dict[str, float]:
        """``throttleStatus`` as Shopify prints it."""
        return {
            "maximumAvailable": float(self.maximum),
            "currentlyAvailable": round(self.available(), 3),
            "restoreRate": float(self.restore_rate),
        }


def requested_cost(
    types: dict[str, dict[str, Spec]], operation: Operation, variables: dict[str, Any]
) -> int:
    """What the operation may cost at most, before it runs."""
    root = "Mutation" if operation.kind == "mutation" else "QueryRoot"
    total = _cost(types, root, operation.selections, variables)
    if operation.kind == "mutation":
        total += (MUTATION_COST - 1) * len(operation.selections)  # root objects count 1
    return total


def _cost(
    types: dict[str, dict[str, Spec]],
    type_name: str,
    selections: list[Field],
    variables: dict[str, Any],
) -> int:
    total = 0
    for selected in selections:
        spec = types[type_name][selected.name]
        if spec.kind == "scalar" or spec.type is None:
            continue
        if spec.kind != "connection":
            total += 1 + _cost(types, spec.type, selected.selections or [], variables)
            continue
        args = {k: value_of(v, variables) for k, v in selected.arguments.items()}
        size = args.get("first") if args.get("first") is not None else args.get("last")
        size = size if isinstance(size, int) and size > 0 else 0
        node, page_info = _connection_parts(types, spec.type, selected, variables)
        total += 2 + size * (1 + node) + page_info
    return total


def _connection_parts(
    types: dict[str, dict[str, Spec]],
    node_type: str,
    selected: Field,
    variables: dict[str, Any],
) -> tuple[int, int]:
    node, page_info = 0, 0
    for part in selected.selections or []:
        if part.name == "nodes":
            node = max(node, _cost(types, node_type, part.selections or [], variables))
        elif part.name == "edges":
            for edge in part.selections or []:
                if edge.name == "node":
                    cost = _cost(types, node_type, edge.selections or [], variables)
                    node = max(node, cost)
        elif part.name == "pageInfo":
            page_info = 1
    return node, page_info
