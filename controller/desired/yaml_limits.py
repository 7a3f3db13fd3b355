"""The limits of contract section 13, checked on the YAML parser's events before any node is
composed: nodes after alias expansion, nesting depth, and no recursive or undefined alias.

The walk is iterative (5,000 nested brackets cause no RecursionError), and an alias counts as a
copy of what it refers to, so an alias bomb is refused at the alias that crosses the limit, having
cost a few kilobytes. The checked events are then composed by `Replay`, without parsing again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.resolver import Resolver

from controller.core.desired_state import (
    DEFAULT_MAX_DESIRED_STATE_BYTES,
    MAX_DESIRED_STATE_DEPTH,
    MAX_DESIRED_STATE_NODES,
)

TOO_DEEP = f"nested deeper than {MAX_DESIRED_STATE_DEPTH} levels"
# PyYAML reads a sexagesimal `1:2:3:...` in quadratic time: no real number is this long
MAX_NUMBER_LENGTH = 100
# what `Replay` resolves a plain scalar to when it is too long to be read as a number
TOO_LONG_TAG = "tag:infra-controller:too-long-number"
# every character an implicit int, float or timestamp can start with, and hold
_NUMBER_START = frozenset("0123456789+-.")
_NUMBER_CHARACTERS = frozenset("0123456789abcdefABCDEF_+-:.xXoObBtTzZ \t")


class RefusedDocument(yaml.MarkedYAMLError):
    """A document over a limit, or with a recursive or undefined alias; `problem` says which."""

    def __init__(self, event: yaml.Event, problem: str) -> None:
        super().__init__(problem=problem, problem_mark=event.start_mark)  # type: ignore[arg-type]


@dataclass
class _Open:
    """A mapping or sequence whose end event has not come yet."""

    anchor: str | None
    nodes_before: int
    level: int  # 1 for a top-level collection
    deepest: int  # the deepest level reached inside it so far (aliases expanded)


def max_nodes(max_bytes: int) -> int:
    """The node limit for a document of at most `max_bytes`: 10,000 for the default 1 MiB, and
    as many more as the byte limit is raised (a thousand environments with a service and an
    idle policy are some 15,000 nodes in 130 kB: `CONTROLLER_MAX_DESIRED_STATE_BYTES` of 2 MiB
    lets them through). An alias still counts as a copy: a bomb is refused as early."""
    return max(
        MAX_DESIRED_STATE_NODES,
        MAX_DESIRED_STATE_NODES * max_bytes // DEFAULT_MAX_DESIRED_STATE_BYTES,
    )


def checked_events(
    text: str, parser: type[Any], limit: int = MAX_DESIRED_STATE_NODES
) -> list[yaml.Event]:
    """Every event of the document, once it is known to stay within the limits (at most
    `limit` nodes); raises RefusedDocument, or the parser's own YAMLError."""
    events: list[yaml.Event] = []
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, levels) of what it marks
    open_: list[_Open] = []
    nodes = 0
    for event in yaml.parse(text, Loader=parser):
        events.append(event)
        if isinstance(event, yaml.DocumentStartEvent):
            anchors.clear()  # as the composer does: anchors do not cross documents
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            closed = open_.pop()
            if closed.anchor is not None:
                levels = closed.deepest - closed.level + 1
                anchors[closed.anchor] = (nodes - closed.nodes_before, levels)
            if open_:
                open_[-1].deepest = max(open_[-1].deepest, closed.deepest)
            continue
        if isinstance(event, yaml.AliasEvent):
            name = event.anchor or ""
            if any(collection.anchor == name for collection in open_):
                raise RefusedDocument(
                    event, f"recursive alias *{name}: it refers to a node that contains it"
                )
            if name not in anchors:
                raise RefusedDocument(event, f"undefined alias *{name}")
            size, levels = anchors[name]
            nodes += size
            deepest = len(open_) + levels
            detail = f" (after expanding alias *{name})"
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            deepest = len(open_)
            detail = ""
            if event.anchor is not None:
                anchors[event.anchor] = (1, 0)
        elif isinstance(event, yaml.CollectionStartEvent):
            nodes += 1
            deepest = len(open_) + 1
            detail = ""
            open_.append(_Open(event.anchor, nodes - 1, deepest, deepest))
        else:
            continue
        if open_:
            open_[-1].deepest = max(open_[-1].deepest, deepest)
        if deepest > MAX_DESIRED_STATE_DEPTH:
            raise RefusedDocument(event, f"{TOO_DEEP}{detail}: refused")
        if nodes > limit:
            raise RefusedDocument(
                event,
                f"more than {limit:,} nodes{detail}: refused "
                "(an alias counts as a copy of what it refers to)",
            )
    return events


class Replay(Composer, Resolver):
    """Composes nodes from events already parsed and checked, instead of parsing again."""

    def __init__(self, events: Iterable[yaml.Event]) -> None:
        self._events = deque(events)
        Composer.__init__(self)
        Resolver.__init__(self)

    def check_event(self, *choices: type[yaml.Event]) -> bool:
        if not self._events:
            return False
        return not choices or isinstance(self._events[0], choices)

    def peek_event(self) -> yaml.Event:
        return self._events[0]

    def get_event(self) -> yaml.Event:
        return self._events.popleft()

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        # The YAML 1.1 number regexes take 64 MB on a 1 MB plain `1:2:3:...`. Past
        # MAX_NUMBER_LENGTH only an int, a float or a timestamp could still match, and only if
        # it starts and is made like one: then it is refused as too long, unread.
        if kind is yaml.ScalarNode and implicit[0] and len(value) > MAX_NUMBER_LENGTH:
            if value[0] in _NUMBER_START and set(value) <= _NUMBER_CHARACTERS:
                return TOO_LONG_TAG
            return self.DEFAULT_SCALAR_TAG
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
