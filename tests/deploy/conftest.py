"""Every AWS operation the controller calls during the test suite, recorded for test_iam.py.

Two sources, one file:

- the controller's own processes, in this one and in the subprocesses the tests start (the
  daemon, `run --once`, the sandbox): the AWS layer appends each call it counts for the
  controller's metrics to the file named by INFRA_CONTROLLER_AWS_CALL_LOG, which this plugin
  sets for the whole session (subprocesses inherit it);
- the product's code driven directly by a test with a client pool of its own (a runner, a
  state store built by hand): `AwsClients.call` and `read` are wrapped here, and a call is
  recorded when the code that makes it is the product's (not a test's set-up, not the
  sandbox's stand-ins).

The IAM test runs last (pytest_collection_modifyitems), once every other test has called AWS.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from functools import cache
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from controller.core import aws
from controller.core.aws import CALL_LOG_VARIABLE, AwsClients

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = (ROOT / "controller", ROOT / "reconcilers")
NOT_PRODUCT = (ROOT / "controller" / "sandbox", Path(aws.__file__).resolve())
LAST = "test_iam.py::test_the_policy_grants_exactly_what_the_suite_calls"
_deselected: list[pytest.Item] = []
_OWNER = pytest.StashKey[Path]()  # the directory of the call log this session made


def call_log() -> Path:
    return Path(os.environ[CALL_LOG_VARIABLE])


@cache
def _product_file(filename: str) -> bool | None:
    """True for the product's code, False for any other, None for the AWS layer itself."""
    path = Path(filename).resolve()
    if path == NOT_PRODUCT[1]:
        return None
    inside = any(path.is_relative_to(p) for p in PRODUCT)
    return inside and not path.is_relative_to(NOT_PRODUCT[0])


def _product_frame(frame: FrameType | None) -> bool:
    """Whether the caller of the AWS layer is the product's code."""
    while frame is not None:
        verdict = _product_file(frame.f_code.co_filename)
        if verdict is not None:
            return verdict
        frame = frame.f_back
    return False


def _record(frame: FrameType | None, service: str, operation: str) -> None:
    if _product_frame(frame):
        with call_log().open("a", encoding="utf-8") as log:
            log.write(f"{service} {operation}\n")


def _wrap_the_aws_layer() -> None:
    call, read = AwsClients.call, AwsClients.read

    async def recorded_call(
        self: AwsClients, service: str, operation: str, region: str | None, /, **params: Any
    ) -> dict[str, Any]:
        _record(sys._getframe(1), service, operation)
        return await call(self, service, operation, region, **params)

    async def recorded_read(
        self: AwsClients,
        shape: type[aws.AnswerT],
        service: str,
        operation: str,
        region: str | None,
        /,
        **params: Any,
    ) -> aws.AnswerT:
        _record(sys._getframe(1), service, operation)
        return await read(self, shape, service, operation, region, **params)

    AwsClients.call = recorded_call  # type: ignore[method-assign]
    AwsClients.read = recorded_read  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    if CALL_LOG_VARIABLE in os.environ:
        return  # an outer session records already
    directory = Path(tempfile.mkdtemp(prefix="infra-controller-aws-calls-"))
    (directory / "calls.txt").touch()
    os.environ[CALL_LOG_VARIABLE] = str(directory / "calls.txt")
    config.stash[_OWNER] = directory
    _wrap_the_aws_layer()


def pytest_unconfigure(config: pytest.Config) -> None:
    directory = config.stash.get(_OWNER, None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The IAM test last: it reads what the whole session called."""
    last = [item for item in items if item.nodeid.endswith(LAST)]
    items[:] = [item for item in items if item not in last] + last


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected.extend(items)


def whole_suite(session: pytest.Session) -> bool:
    """Whether this session runs every test of the suite (no file, test, -k or -m left out):
    only then can it say that a granted operation is never called."""
    if _deselected or any("::" in arg for arg in session.config.args):
        return False
    every = {p.resolve() for p in (ROOT / "tests").rglob("test_*.py")}
    ran = {Path(str(item.path)).resolve() for item in session.items}
    return every <= ran
