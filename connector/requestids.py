"""A data subject request's id: its kind's prefix, the day it was received and eight hex
digits ("er-20260105-97368204").

Two places know the shape and must agree: the request service makes the ids and tells an
id from what is no id (:mod:`connector.dsr_servicebase`), and the log's masking keeps an id
as it is where its digits would read as a phone number (:mod:`connector.logs`). A kind added
with a prefix only the first knew would have had its ids masked in every log line.
"""

from __future__ import annotations

__all__ = ["KIND_PREFIXES", "PREFIX"]

#: The prefix of each kind's request ids.
PREFIX = {"erase": "er", "access": "ac", "rectify": "rc"}

#: The prefixes as a regular expression's alternatives, for the patterns built on them.
KIND_PREFIXES = "|".join(PREFIX.values())
