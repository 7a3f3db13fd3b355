"""The Terraform module read without a terraform binary: every `.tf` file parsed by python-hcl2.

Expressions come back as strings (`${var.name}`); blocks as lists of dicts, labels as keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
from hcl2.utils import SerializationOptions

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "deploy" / "terraform"
EXAMPLE = MODULE / "examples" / "minimal"
_OPTIONS = SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)
REFERENCE = re.compile(r"\b(var|local)\.([a-z0-9_]+)")


@dataclass(frozen=True)
class Config:
    """One directory of `.tf` files, parsed."""

    directory: Path
    files: dict[str, dict[str, Any]]

    def blocks(self, kind: str) -> Iterator[dict[str, Any]]:
        for parsed in self.files.values():
            yield from parsed.get(kind, [])

    @property
    def variables(self) -> dict[str, dict[str, Any]]:
        return {name: body for block in self.blocks("variable") for name, body in block.items()}

    @property
    def locals(self) -> dict[str, Any]:
        return {name: value for block in self.blocks("locals") for name, value in block.items()}

    def resources(self, kind: str = "resource") -> dict[str, dict[str, Any]]:
        """`TYPE.NAME` (or `data.TYPE.NAME`) -> body."""
        prefix = "data." if kind == "data" else ""
        return {
            f"{prefix}{rtype}.{name}": body
            for block in self.blocks(kind)
            for rtype, named in block.items()
            for name, body in named.items()
        }

    def references(self) -> set[tuple[str, str]]:
        """Every `var.X` and `local.X` in an expression, as (kind, name)."""
        return {
            (match.group(1), match.group(2))
            for text in strings(self.files)
            for match in REFERENCE.finditer(text)
        }


def strings(value: Any) -> Iterator[str]:
    """Every string inside a parsed structure, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


@cache
def parse(directory: Path) -> Config:
    files = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            files[path.name] = hcl2.load(handle, serialization_options=_OPTIONS)
    return Config(directory, files)


def module() -> Config:
    return parse(MODULE)


def example() -> Config:
    return parse(EXAMPLE)
