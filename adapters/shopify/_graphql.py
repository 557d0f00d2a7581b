"""A small GraphQL reader for the Shopify sandbox: operations, fields, arguments, variables.

Not a GraphQL engine. It reads the executable subset the adapter (and a person trying the
sandbox by hand) writes: one ``query`` or ``mutation`` (or the ``{ ... }`` shorthand), with
variable definitions, aliases, arguments of every literal kind, and nested selections.
Fragments and directives are refused with a parse error, as an unknown construct would be.
Errors carry GraphQL's ``locations`` so the fake's answers look like Shopify's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EnumValue", "Field", "GraphQLSyntaxError", "Operation", "Variable", "parse", "value_of"]

_TOKEN = re.compile(
    r"""
    (?P<skip>[\s,\ufeff]+|\#[^\n]*)
  | (?P<spread>\.\.\.)
  | (?P<punct>[!$():=@\[\]{}|&])
  | (?P<string>"(?:[^"\\\n]|\\["\\/bfnrt]|\\u[0-9A-Fa-f]{4})*")
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
    """,
    re.VERBOSE,
)

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class GraphQLSyntaxError(Exception):
    """The document could not be read; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Variable:
    """A ``$name`` reference inside an argument value."""

    name: str


@dataclass(frozen=True)
class EnumValue:
    """An enum literal such as ``UPDATED_AT``."""

    name: str


@dataclass
class Field:
    """One selected field: ``alias: name(args) { selections }``."""

    name: str
    alias: str | None
    arguments: dict[str, Any]
    selections: list[Field] | None
    line: int
    column: int

    @property
    def key(self) -> str:
        """The key this field has in the answer."""
        return self.alias or self.name


@dataclass
class Operation:
    """The one operation of a document."""

    kind: str  # "query" or "mutation"
    name: str | None
    variables: dict[str, tuple[str, Any]] = field(default_factory=dict)  # name -> (type, default)
    selections: list[Field] = field(default_factory=list)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    line: int
    column: int


def _tokens(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    position, line, line_start = 0, 1, 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        column = position - line_start + 1
        if match is None:
            raise GraphQLSyntaxError(
                f'Parse error on "{source[position]}" at [{line}, {column}]', line, column
            )
        kind = match.lastgroup or "skip"
        text = match.group()
        if kind != "skip":
            tokens.append(_Token(kind, text, line, column))
        newlines = text.count("\n")
        if newlines:
            line += newlines
            line_start = position + text.rfind("\n") + 1
        position = match.end()
    return tokens


def _unquote(text: str) -> str:
    out: list[str] = []
    i = 1
    while i < len(text) - 1:
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1]
            if nxt == "u":
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = _tokens(source)
        self.index = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def fail(self, token: _Token | None) -> GraphQLSyntaxError:
        if token is None:
            last = self.tokens[-1] if self.tokens else _Token("eof", "", 1, 1)
            return GraphQLSyntaxError(
                f"Unexpected end of document at [{last.line}, {last.column}]",
                last.line,
                last.column,
            )
        shown = token.text if token.kind != "string" else "string"
        return GraphQLSyntaxError(
            f'Parse error on "{shown}" ({token.kind.upper()}) at [{token.line}, {token.column}]',
            token.line,
            token.column,
        )

    def take(self, text: str | None = None, kind: str | None = None) -> _Token:
        token = self.peek()
        if (
            token is None
            or (text is not None and token.text != text)
            or (kind is not None and token.kind != kind)
        ):
            raise self.fail(token)  # fragments (...) and directives (@) land here too
        self.index += 1
        return token

    def at(self, text: str) -> bool:
        token = self.peek()
        return token is not None and token.text == text and token.kind != "string"

    def document(self) -> Operation:
        if self.at("{"):
            operation = Operation(kind="query", name=None)
        else:
            kind = self.take(kind="name")
            if kind.text not in ("query", "mutation"):
                raise self.fail(kind)
            operation = Operation(kind=kind.text, name=None)
            if (token := self.peek()) is not None and token.kind == "name":
                operation.name = self.take(kind="name").text
            if self.at("("):
                operation.variables = self.variable_definitions()
        operation.selections = self.selection_set()
        if self.peek() is not None:
            raise self.fail(self.peek())  # one operation per document in this subset
        return operation

    def variable_definitions(self) -> dict[str, tuple[str, Any]]:
        self.take("(")
        found: dict[str, tuple[str, Any]] = {}
        while not self.at(")"):
            self.take("$")
            name = self.take(kind="name").text
            self.take(":")
            type_text = self.type_reference()
            default = None
            if self.at("="):
                self.take("=")
                default = self.value(constant=True)
            found[name] = (type_text, default)
        self.take(")")
        return found

    def type_reference(self) -> str:
        if self.at("["):
            self.take("[")
            inner = self.type_reference()
            self.take("]")
            text = f"[{inner}]"
        else:
            text = self.take(kind="name").text
        if self.at("!"):
            self.take("!")
            text += "!"
        return text

    def selection_set(self) -> list[Field]:
        self.take("{")
        fields: list[Field] = []
        while not self.at("}"):
            fields.append(self.field())
        self.take("}")
        if not fields:
            raise self.fail(self.tokens[self.index - 1])
        return fields

    def field(self) -> Field:
        first = self.take(kind="name")
        alias, name = None, first.text
        if self.at(":"):
            self.take(":")
            alias, name = first.text, self.take(kind="name").text
        arguments: dict[str, Any] = {}
        if self.at("("):
            self.take("(")
            while not self.at(")"):
                argument = self.take(kind="name").text
                self.take(":")
                arguments[argument] = self.value(constant=False)
            self.take(")")
        selections = self.selection_set() if self.at("{") else None
        return Field(name, alias, arguments, selections, first.line, first.column)

    def value(self, *, constant: bool) -> Any:
        token = self.peek()
        if token is None:
            raise self.fail(None)
        if token.text == "$" and not constant:
            self.take("$")
            return Variable(self.take(kind="name").text)
        if token.kind == "string":
            self.index += 1
            return _unquote(token.text)
        if token.kind == "number":
            self.index += 1
            number = float(token.text)
            return int(token.text) if number.is_integer() and "." not in token.text else number
        if token.kind == "name":
            self.index += 1
            return {"true": True, "false": False, "null": None}.get(
                token.text, EnumValue(token.text)
            )
        if token.text == "[":
            self.take("[")
            items = []
            while not self.at("]"):
                items.append(self.value(constant=constant))
            self.take("]")
            return items
        if token.text == "{":
            self.take("{")
            fields: dict[str, Any] = {}
            while not self.at("}"):
                key = self.take(kind="name").text
                self.take(":")
                fields[key] = self.value(constant=constant)
            self.take("}")
            return fields
        raise self.fail(token)


def parse(source: str) -> Operation:
    """Read one operation.

    Raises:
        GraphQLSyntaxError: the document is not in the subset (or not GraphQL at all).
    """
    if not source.strip():
        raise GraphQLSyntaxError("No query string was present", 1, 1)
    return _Parser(source).document()


def value_of(value: Any, variables: dict[str, Any]) -> Any:
    """An argument's value with variables filled in (enums as their names)."""
    if isinstance(value, Variable):
        return variables.get(value.name)
    if isinstance(value, EnumValue):
        return value.name
    if isinstance(value, list):
        return [value_of(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: value_of(item, variables) for key, item in value.items()}
    return value
