"""Load a desired-state document with positions: every problem reads `FILE:LINE:COLUMN: ...`.

PyYAML composes the node tree (which carries positions); we build plain Python values from it
ourselves so that mapping keys stay strings (YAML 1.1 would turn a key `on` into True) and a
duplicate key is an error instead of silently keeping the last value.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from controller.core.desired_state import DesiredState

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a desired-state document, at a position (1-based)."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class InvalidDesiredState(Exception):
    """The document does not validate; `problems` lists every reason, one per position."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class LoadedDesiredState:
    state: DesiredState
    # a content hash: what a file source reports as its revision
    digest: str


@dataclass
class _Positions:
    keys: dict[Path, tuple[int, int]]
    values: dict[Path, tuple[int, int]]


def _position(mark: yaml.Mark) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.loader = yaml.SafeLoader("")
        self.positions = _Positions(keys={}, values={})
        self.duplicates: list[Problem] = []

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.positions.values[path] = _position(node.start_mark)
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise InvalidDesiredState(
                        [Problem(self.file, *_position(key_node.start_mark), "keys must be plain")]
                    )
                key = str(key_node.value)
                if key in result:
                    # the first definition is kept so the rest of the file is still checked
                    line, _ = self.positions.keys[(*path, key)]
                    self.duplicates.append(
                        Problem(
                            self.file,
                            *_position(key_node.start_mark),
                            f"{_dotted((*path, key))}: duplicate key {key!r} "
                            f"(first defined at line {line})",
                        )
                    )
                    continue
                self.positions.keys[(*path, key)] = _position(key_node.start_mark)
                result[key] = self.build(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)


def _dotted(path: Path) -> str:
    return ".".join(str(part) for part in path) or "(document)"


def _known_fields(model: type[BaseModel], path: Path) -> list[str]:
    """The field names allowed at `path`, to suggest a correction for a typo."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return []
        # a part that is not a field is a dict key (an environment name): stay on the value type
        if part in fields:
            current = _model_in(fields[part].annotation)
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _model_in(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _problems_from(error: ValidationError, file: str, positions: _Positions) -> list[Problem]:
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        loc: Path = tuple(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        kind = item["type"]
        if loc and loc[-1] == "[key]":
            loc = loc[:-1]
            position = positions.keys.get(loc)
            message = f"invalid environment name {loc[-1]!r}: use lowercase letters, digits and '-'"
        elif kind == "extra_forbidden":
            position = positions.keys.get(loc)
            allowed = _known_fields(DesiredState, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            message = f"unknown key {loc[-1]!r}" + (
                f" (did you mean {close[0]!r}?)" if close else ""
            )
            if allowed:
                message += f"; allowed: {', '.join(allowed)}"
        elif kind == "missing":
            position = positions.keys.get(loc[:-1]) or positions.values.get(loc[:-1])
            message = f"missing required key {loc[-1]!r}"
            loc = loc[:-1]
        else:
            position = None
        if position is None:
            # the nearest enclosing node that exists in the file
            for depth in range(len(loc), -1, -1):
                position = positions.values.get(loc[:depth])
                if position is not None:
                    break
        line, column = position or (1, 1)
        where = _dotted(loc)
        problems.append(Problem(file, line, column, f"{where}: {message}"))
    return problems


def parse_desired_state(text: str, file: str) -> LoadedDesiredState:
    """Validate a document; raise InvalidDesiredState with every problem found."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = _position(mark) if mark else (1, 1)
        reason = exc.problem or exc.context or "invalid YAML"
        raise InvalidDesiredState(
            [Problem(file, line, column, f"invalid YAML: {reason}")]
        ) from None
    except yaml.YAMLError as exc:
        raise InvalidDesiredState([Problem(file, 1, 1, f"invalid YAML: {exc}")]) from None
    if node is None:
        raise InvalidDesiredState(
            [Problem(file, 1, 1, "the file is empty: expected `version: 1` and `environments`")]
        )
    builder = _Builder(file)
    data = builder.build(node, ())
    if not isinstance(data, dict):
        line, column = _position(node.start_mark)
        raise InvalidDesiredState(
            [Problem(file, line, column, "expected a mapping with `version` and `environments`")]
        )
    problems = list(builder.duplicates)
    try:
        state = DesiredState.model_validate(data)
    except ValidationError as exc:
        problems += _problems_from(exc, file, builder.positions)
    if problems:
        raise InvalidDesiredState(sorted(problems, key=lambda p: (p.line, p.column)))
    return LoadedDesiredState(state=state, digest=digest)
