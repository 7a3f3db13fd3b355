"""The shape the README's architecture section promises: small modules, short engine functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_LIMIT = 400
ENGINE_FUNCTION_LIMIT = 60


def sources(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (ROOT / package).rglob("*.py"))


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in sources("controller", "reconcilers")
        if (lines := len(path.read_text().splitlines())) > MODULE_LIMIT
    }
    assert long == {}


def test_no_engine_function_is_over_60_lines() -> None:
    long = {}
    for path in sources("controller/engine"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > ENGINE_FUNCTION_LIMIT:
                    long[f"{path.relative_to(ROOT)}:{node.name}"] = length
    assert long == {}
