"""Load a desired-state document with positions: every problem reads `FILE:LINE:COLUMN: ...`.

Whoever can push to git writes the document, so it is read as hostile input: (1) over `max_bytes`
it is refused unparsed; (2) `yaml_limits` walks the parser's events and refuses an alias bomb,
deep nesting or a recursive alias before anything is expanded; (3) the checked events are composed
into nodes (which carry positions) and we build plain values ourselves: keys stay strings (YAML
1.1 would turn a key `on` into True), a duplicate key is an error, and only the scalar types the
schema can use are constructed (any other tag is a problem, not a crash).
`parse_desired_state` raises InvalidDesiredState and nothing else.
"""

from __future__ import annotations

import difflib
import hashlib
import unicodedata
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from controller.core.desired_state import DEFAULT_MAX_DESIRED_STATE_BYTES, DesiredState
from controller.desired.yaml_limits import (
    MAX_NUMBER_LENGTH,
    TOO_DEEP,
    TOO_LONG_TAG,
    RefusedDocument,
    Replay,
    checked_events,
    max_nodes,
)

Path = tuple[str | int, ...]

# libyaml's parser when PyYAML has it (the PyPI wheels do): some 500 times faster than the
# pure-Python one on a hostile 1 MiB document (ms instead of seconds on 0.25 vCPU)
_PARSER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# a problem echoes user input: long enough to recognise it, short enough for one log line
_MAX_MESSAGE = 500
# how the catch-all's problem starts (the fuzz tests and bench count these as crashes)
UNEXPECTED_ERROR = "unexpected error while reading the document"


def _printable(text: str, limit: int) -> str:
    """One safe line: control, format and line-separator characters escaped (a raw newline or
    NUL would forge or cut a `FILE:LINE:COLUMN` line), and at most `limit` characters."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if text.isprintable():
        return text
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Cs")
        else char
        for char in text
    )


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a desired-state document, at a position (1-based)."""

    file: str
    line: int
    column: int
    message: str

    def __post_init__(self) -> None:
        # escaped once here, so every consumer (stderr, logs, /status) gets a single line
        object.__setattr__(self, "file", _printable(self.file, _MAX_MESSAGE))
        object.__setattr__(self, "message", _printable(self.message, _MAX_MESSAGE))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class InvalidDesiredState(Exception):
    """The document does not validate; `problems` lists every reason, one per position."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _invalid(file: str, position: tuple[int, int], message: str) -> InvalidDesiredState:
    return InvalidDesiredState([Problem(file, *position, message)])


def too_large(file: str, max_bytes: int) -> InvalidDesiredState:
    """The problem of a document over the byte limit (also raised by sources reading bytes)."""
    return _invalid(
        file,
        (1, 1),
        f"the document is larger than the limit of {max_bytes:,} bytes "
        "(CONTROLLER_MAX_DESIRED_STATE_BYTES)",
    )


@dataclass(frozen=True)
class LoadedDesiredState:
    state: DesiredState
    # a content hash: what a file source reports as its revision
    digest: str


@dataclass
class _Positions:
    keys: dict[Path, tuple[int, int]]
    values: dict[Path, tuple[int, int]]


def _position(mark: Any) -> tuple[int, int]:
    """A yaml Mark (pure or libyaml) as 1-based (line, column); (1, 1) when there is none."""
    return (1, 1) if mark is None else (mark.line + 1, mark.column + 1)


def _offset_position(text: str, offset: int) -> tuple[int, int]:
    offset = min(max(offset, 0), len(text))
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


# --- plain values from the nodes --------------------------------------------------------------

_YAML_TAG = "tag:yaml.org,2002:"
# the scalar types the schema can use; YAML 1.1 resolves plain scalars to these implicitly
_SCALAR_TAGS = frozenset(
    _YAML_TAG + name for name in ("str", "int", "float", "bool", "null", "timestamp")
)
# a plain `<<` or `=` resolves to these, which SafeLoader cannot construct: read them as text
_TEXT_TAGS = frozenset((_YAML_TAG + "merge", _YAML_TAG + "value"))
_NUMBER_TAGS = frozenset(_YAML_TAG + name for name in ("int", "float", "timestamp"))
# keys are kept as written (a key `on` stays "on"): only an explicit unusual tag is refused
_KEY_TAGS = _SCALAR_TAGS | _TEXT_TAGS | {TOO_LONG_TAG}
# PyYAML's constructors raise all of these on a value that does not fit its tag
# (`!!float` with no value is an IndexError, `!!timestamp x` an AttributeError)
_CONSTRUCT_ERRORS = (
    yaml.YAMLError,
    ValueError,
    TypeError,
    ArithmeticError,
    LookupError,
    AttributeError,
)


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag


class _Refused:
    """Stands for a value already reported as a problem (so pydantic does not report it again)."""


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.loader = yaml.SafeLoader("")
        self.positions = _Positions(keys={}, values={})
        self.problems: list[Problem] = []
        self.refused: set[Path] = set()

    def _refuse(self, node: yaml.Node, path: Path, message: str) -> _Refused:
        self.problems.append(Problem(self.file, *_position(node.start_mark), message))
        self.refused.add(path)
        return _Refused()

    def build(self, node: yaml.Node, path: Path) -> Any:
        # recursive, but only over nodes the event walk checked: at most 64 levels deep
        self.positions.values[path] = _position(node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        expected = "map" if isinstance(node, yaml.MappingNode) else "seq"
        if node.tag != _YAML_TAG + expected:
            return self._refuse(
                node, path, f"{_dotted(path)}: unsupported tag {_short(node.tag)!r}"
            )
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _invalid(self.file, _position(key_node.start_mark), "keys must be plain")
            key = str(key_node.value)
            where = _dotted((*path, key))
            if key_node.tag not in _KEY_TAGS:
                tag = _short(key_node.tag)
                self._refuse(key_node, (*path, key), f"{where}: unsupported tag {tag!r} on a key")
            elif key in result:
                # the first definition is kept so the rest of the file is still checked
                line, _ = self.positions.keys[(*path, key)]
                self.problems.append(
                    Problem(
                        self.file,
                        *_position(key_node.start_mark),
                        f"{where}: duplicate key {key!r} (first defined at line {line})",
                    )
                )
            else:
                self.positions.keys[(*path, key)] = _position(key_node.start_mark)
                result[key] = self.build(value_node, (*path, key))
        return result

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        tag, where, length = node.tag, _dotted(path), len(node.value)
        if tag in _TEXT_TAGS:
            return str(node.value)
        if tag == TOO_LONG_TAG:
            return self._refuse(
                node,
                path,
                f"{where}: a plain value of {length} characters that reads as a number or a date "
                f"is too long (at most {MAX_NUMBER_LENGTH}); quote it if it is text",
            )
        if tag not in _SCALAR_TAGS:
            return self._refuse(
                node,
                path,
                f"{where}: unsupported tag {_short(tag)!r} "
                "(only plain strings, numbers, booleans and null are used)",
            )
        if tag in _NUMBER_TAGS and length > MAX_NUMBER_LENGTH:
            message = f"{_short(tag)} value of {length} characters is too long"
            return self._refuse(node, path, f"{where}: {message} (at most {MAX_NUMBER_LENGTH})")
        try:
            return self.loader.construct_object(node, deep=True)
        except _CONSTRUCT_ERRORS:
            message = f"invalid {_short(tag)} value {node.value!r}"
            return self._refuse(node, path, f"{where}: {message}")


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


def _problems_from(
    error: ValidationError, file: str, positions: _Positions, refused: set[Path]
) -> list[Problem]:
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        loc: Path = tuple(item["loc"])
        if any(loc[:depth] in refused for depth in range(len(loc) + 1)):
            continue  # a value refused while building: already reported, with a better reason
        message = item["msg"].removeprefix("Value error, ")
        kind = item["type"]
        if len(loc) >= 2 and loc[-1] == "[key]" and kind != "extra_forbidden":
            loc = loc[:-1]
            position = positions.keys.get(loc)
            message = f"invalid environment name {loc[-1]!r}: use lowercase letters, digits and '-'"
        elif kind == "extra_forbidden" and loc:
            position = positions.keys.get(loc)
            allowed = _known_fields(DesiredState, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            message = f"unknown key {loc[-1]!r}" + (
                f" (did you mean {close[0]!r}?)" if close else ""
            )
            if allowed:
                message += f"; allowed: {', '.join(allowed)}"
        elif kind == "missing" and loc:
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


def _yaml_problem(exc: yaml.YAMLError, text: str, file: str) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError):
        position = _position(exc.problem_mark or exc.context_mark)
        reason = exc.problem or exc.context or "invalid YAML"
        if isinstance(exc, RefusedDocument):
            return Problem(file, *position, reason)
        if reason == "exceeded maximum nesting depth":
            # libyaml's own limit (1,000 levels) can stop the parser before our walk sees level 65
            return Problem(file, *position, f"{TOO_DEEP}: refused")
        return Problem(file, *position, f"invalid YAML: {reason}")
    if isinstance(exc, yaml.reader.ReaderError):
        # a character YAML forbids (NUL...): its str() spans two lines and has no line number
        offset = exc.position
        if exc.encoding != "unicode":  # libyaml counts UTF-8 bytes, PyYAML characters
            offset = len(text.encode("utf-8")[:offset].decode("utf-8", "ignore"))
        message = f"invalid YAML: character {chr(exc.character)!r} is not allowed"
        return Problem(file, *_offset_position(text, offset), message)
    return Problem(file, 1, 1, f"invalid YAML: {type(exc).__name__}")


def _load(text: str, file: str, max_bytes: int) -> LoadedDesiredState:
    try:
        # len(text) is a lower bound of the UTF-8 size: a huge text is refused unencoded
        oversized = len(text) > max_bytes or len(data := text.encode("utf-8")) > max_bytes
    except UnicodeEncodeError as exc:  # a lone surrogate: only a caller's str can hold one
        position = _offset_position(text, exc.start)
        raise _invalid(file, position, "invalid text: a lone surrogate is not UTF-8") from None
    if oversized:
        raise too_large(file, max_bytes)
    digest = hashlib.sha256(data).hexdigest()
    try:
        node = Replay(checked_events(text, _PARSER, max_nodes(max_bytes))).get_single_node()
    except yaml.YAMLError as exc:
        raise InvalidDesiredState([_yaml_problem(exc, text, file)]) from None
    if node is None:
        message = "the file is empty: expected `version: 1` and `environments`"
        raise _invalid(file, (1, 1), message)
    builder = _Builder(file)
    values = builder.build(node, ())
    problems = builder.problems
    if not isinstance(values, dict):
        message = "expected a mapping with `version` and `environments`"
        raise InvalidDesiredState(problems or [Problem(file, *_position(node.start_mark), message)])
    try:
        state = DesiredState.model_validate(values)
    except ValidationError as exc:
        problems += _problems_from(exc, file, builder.positions, builder.refused)
    if problems:
        # once each: a refused node reached through several aliases is one mistake
        unique = dict.fromkeys(problems)
        raise InvalidDesiredState(sorted(unique, key=lambda p: (p.line, p.column)))
    return LoadedDesiredState(state=state, digest=digest)


def parse_desired_state(
    text: str, file: str, *, max_bytes: int = DEFAULT_MAX_DESIRED_STATE_BYTES
) -> LoadedDesiredState:
    """Validate a document; raise InvalidDesiredState with every problem found (and nothing
    else). CPU-bound: inside the event loop, call it from a thread."""
    try:
        return _load(text, file, max_bytes)
    except InvalidDesiredState:
        raise
    except Exception as exc:
        # the last line of defence, for a case nobody has thought of yet: still a problem, never
        # a traceback (every known case is handled above, with a precise position and reason)
        message = f"{UNEXPECTED_ERROR}: {type(exc).__name__}: {exc}"
        raise _invalid(file, (1, 1), message) from None
