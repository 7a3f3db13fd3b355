"""The command line starts without what its command does not use: `--help` and the commands
that call a running controller never load the AWS SDK, the HTTP server or the engine."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("aiobotocore", "botocore", "aiohttp", "controller.engine", "controller.http_api", "shtab")


def loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running `code`."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return list(json.loads(out.splitlines()[-1]))


def test_help_loads_neither_the_aws_sdk_nor_the_http_stack_nor_the_engine() -> None:
    code = (
        "from controller.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert loaded_after(code) == []


def test_validate_loads_neither_the_aws_sdk_nor_the_http_stack() -> None:
    code = (
        "import os, tempfile\nfrom controller.cli import main\n"
        "path = os.path.join(tempfile.mkdtemp(), 'd.yaml')\n"
        "open(path, 'w').write('version: 1\\nenvironments: {}\\n')\n"
        "assert main(['validate', path]) == 0"
    )
    assert loaded_after(code) == []


def test_every_command_still_parses_without_its_imports() -> None:
    code = (
        "from controller.cli import build_parser\n"
        "parser = build_parser()\n"
        "for argv in (['status'], ['wake', 'x'], ['events', '--follow'], ['run', '--once'],\n"
        "             ['plan'], ['schema'], ['completion', 'bash'], ['sandbox']):\n"
        "    parser.parse_args(argv)"
    )
    assert loaded_after(code) == []
