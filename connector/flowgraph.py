"""Flows that meet: loops between systems and systems written from two sources.

Each flow is read on its own, and keeps one delivered state per destination and person,
not per flow: flows that meet write a person again that nothing changed. ``check`` warns
of both shapes (README, Known limits: "Flows that meet").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

__all__ = ["loops", "meeting_warnings", "two_sources"]


class FlowShape(Protocol):
    """What this module reads of a flow: its name, its source and its destinations."""

    @property
    def name(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def destinations(self) -> Sequence[str]: ...


def _reachable(edges: Mapping[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for following in edges.get(todo.pop(), set()):
            if following not in seen:
                seen.add(following)
                todo.append(following)
    return seen


def loops(flows: Sequence[FlowShape]) -> list[tuple[list[str], list[str]]]:
    """Each loop of flows: the systems in it and the flows between them, both sorted.

    A loop is a set of systems each of which writes, through one flow or several, to every
    other (a strongly connected part of the flows' graph, of two systems or more).
    """
    edges: dict[str, set[str]] = {}
    for flow in flows:
        edges.setdefault(flow.source, set()).update(flow.destinations)
    reach = {system: _reachable(edges, system) for system in edges}
    found: list[tuple[list[str], list[str]]] = []
    placed: set[str] = set()
    for system in sorted(edges):
        if system in placed or system not in reach[system]:
            continue
        members = {other for other in reach[system] if system in reach.get(other, set())}
        placed |= members
        names = sorted(
            {
                flow.name
                for flow in flows
                if flow.source in members and members.intersection(flow.destinations)
            }
        )
        found.append((sorted(members), names))
    return found


def two_sources(flows: Sequence[FlowShape]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each system that flows of more than one source write to, with those flows and sources
    (flow name, source), sorted."""
    writers: dict[str, list[tuple[str, str]]] = {}
    for flow in flows:
        for dest in flow.destinations:
            writers.setdefault(dest, []).append((flow.name, flow.source))
    return [
        (dest, sorted(pairs))
        for dest, pairs in sorted(writers.items())
        if len({source for _, source in pairs}) > 1
    ]


def _listed(words: Iterable[str]) -> str:
    items = list(words)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def meeting_warnings(flows: Sequence[FlowShape]) -> list[str]:
    """What ``check`` says of flows that meet: one warning per loop and per system written
    from two sources."""
    warnings = [
        f"flows {_listed(names)} form a loop ({_listed(systems)} write to each other): "
        "what one flow writes, the next reads back as a change and writes again once; "
        "a value the round trip does not give back as it was (a field one mapping lacks, "
        "Pipedrive's name split at its first space) replaces the one it came from"
        for systems, names in loops(flows)
    ]
    warnings += [
        f"{dest} is written by flows {_listed(f'{n} (from {src})' for n, src in pairs)}: "
        "where their sources disagree about a person, or one holds a field the other lacks, "
        "each run of each flow writes the person again, the last one winning"
        for dest, pairs in two_sources(flows)
    ]
    return warnings
