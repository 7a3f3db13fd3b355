"""IAM from the code: the task role's policy (deploy/terraform/iam.tf) is built from one list,
`controller_actions` (deploy/terraform/controller_actions.tf), and that list is exactly what
the controller calls: every operation the test suite saw the controller call is in it, and
every operation in it was called (conftest.py records the calls; this test runs last).
Static checks back it: each listed action is a real operation, each call written in the code
with a literal name is listed, each listed name appears in the code."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from botocore.session import get_session

from tests.deploy import hcl
from tests.deploy.conftest import call_log, whole_suite
from tests.deploy.hcl import ROOT

# the AWS SDK's service name -> IAM's prefix, where they differ
IAM_PREFIX = {"elbv2": "elasticloadbalancing"}
# API operations IAM authorizes as other actions: a DynamoDB transaction is authorized item by
# item (the state store's fenced write is a ConditionCheck on the lease and a Put)
AUTHORIZED_AS = {
    ("dynamodb", "TransactWriteItems"): {"dynamodb:ConditionCheckItem", "dynamodb:PutItem"},
}


def iam_actions(service: str, operation: str) -> set[str]:
    return AUTHORIZED_AS.get(
        (service, operation), {f"{IAM_PREFIX.get(service, service)}:{operation}"}
    )


def granted() -> dict[str, str]:
    """IAM action -> the scope the module grants it on."""
    actions: dict[str, str] = hcl.module().locals["controller_actions"]
    return actions


def product_sources() -> Iterator[Path]:
    for package in ("controller", "reconcilers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if not path.is_relative_to(ROOT / "controller" / "sandbox"):
                yield path


SERVICES = frozenset(get_session().get_available_services())


@cache
def sdk_operations(service: str) -> frozenset[str]:
    return frozenset(get_session().get_service_model(service).operation_names)


Function = tuple[str, int]  # a function's name and how many arguments a call passes it


def _function(node: ast.FunctionDef | ast.AsyncFunctionDef) -> Function:
    arguments = node.args.posonlyargs + node.args.args
    method = bool(arguments) and arguments[0].arg in ("self", "cls")
    return node.name, len(arguments) - method


def literal_calls() -> dict[tuple[str, str], set[Function]]:
    """(service, operation) of every `X.call(service, operation, ...)` and
    `X.read(shape, service, operation, ...)` of the product with literal names, and the
    functions that make them."""
    found: dict[tuple[str, str], set[Function]] = {}
    for path in product_sources():
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                first = {"call": 0, "read": 1}.get(node.func.attr)
                names = node.args[first : first + 2] if first is not None else []
                values = [n.value for n in names if isinstance(n, ast.Constant)]
                if len(values) == 2 and isinstance(values[0], str) and isinstance(values[1], str):
                    service, operation = values[0], values[1]
                    if service in SERVICES and operation in sdk_operations(service):
                        found.setdefault((service, operation), set()).add(_function(function))
    return found


def called(function: Function) -> bool:
    """Whether the product calls a function of that name with that many arguments."""
    name, count = function
    for path in product_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and len(node.args) + len(node.keywords) == count:
                callee = node.func
                if (isinstance(callee, ast.Attribute) and callee.attr == name) or (
                    isinstance(callee, ast.Name) and callee.id == name
                ):
                    return True
    return False


def test_every_granted_action_is_a_real_operation_of_its_service() -> None:
    services = {prefix: service for service, prefix in IAM_PREFIX.items()}
    transactions = {action for actions in AUTHORIZED_AS.values() for action in actions}
    for action in granted():
        prefix, _, operation = action.partition(":")
        service = services.get(prefix, prefix)
        assert operation in sdk_operations(service) or action in transactions, action
        assert "*" not in action, action


def test_every_scope_grants_on_named_resources_and_the_policy_is_built_from_the_list() -> None:
    module = hcl.module()
    scopes = module.locals["action_scopes"]
    assert set(granted().values()) <= set(scopes)
    # only the reads that support no resource-level permission, and PutMetricData under its
    # namespace condition, are granted on "*"
    assert {scope for scope, resources in scopes.items() if resources == ["*"]} == {
        "any",
        "metric_namespace",
    }
    assert set(module.locals["action_conditions"]) == {"metric_namespace"}
    assert "local.controller_actions" in module.locals["scope_actions"]
    policy = module.resources("data")["data.aws_iam_policy_document.task"]
    assert set(policy) == {"dynamic"}  # no statement but those built from the list
    assert policy["dynamic"][0]["statement"]["for_each"] == "${local.task_statements}"


def test_every_call_written_in_the_code_is_granted_unless_nothing_calls_it() -> None:
    """A call written in a function the product never calls is not granted (least privilege),
    and this test says so the day something calls it. Today: `CodeBuildRunner.cancel`
    (StopBuild): nothing in the controller cancels a run (only tests call the runners'
    `cancel`)."""
    calls = literal_calls()
    assert len(calls) > 15  # the scan found the calls
    missing = {c: where for c, where in calls.items() if iam_actions(*c) - set(granted())}
    reachable = {c: where for c, where in missing.items() if any(map(called, where))}
    assert reachable == {}, "add them to deploy/terraform/controller_actions.tf"


def test_every_granted_operation_is_named_in_the_code() -> None:
    constants = {
        node.value
        for path in product_sources()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    called = {
        action
        for (service, operation) in AUTHORIZED_AS
        if operation in constants
        for action in AUTHORIZED_AS[(service, operation)]
    }
    named = {a for a in granted() if a.partition(":")[2] in constants}
    assert set(granted()) - named - called == set()


def recorded() -> set[tuple[str, str]]:
    lines = call_log().read_text().splitlines()
    return {(service, operation) for service, operation in (line.split() for line in lines)}


def test_the_policy_grants_exactly_what_the_suite_calls(request: pytest.FixtureRequest) -> None:
    """Runs last (conftest.py). Every operation the controller called in this session is
    granted; on a whole-suite run, every granted operation was called by some test."""
    calls = recorded()
    actions = {a for call in calls for a in iam_actions(*call)}
    not_granted = actions - set(granted())
    assert not_granted == set(), (
        f"the controller calls {sorted(not_granted)}: add them to "
        "deploy/terraform/controller_actions.tf"
    )
    if whole_suite(request.session):
        never_called = set(granted()) - actions
        assert never_called == set(), (
            f"granted but never called by the test suite: {sorted(never_called)}: test the "
            "call, or take it out of deploy/terraform/controller_actions.tf"
        )
