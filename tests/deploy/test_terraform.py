"""The Terraform module (deploy/terraform) and its example, checked without a terraform binary:
every `.tf` file parses, every variable and local used is declared (and every one declared is
used), the example passes what the module needs, and the task runs the controller as the README
says (ARM64, 0.25 vCPU / 512 MB, health check, logs, the settings it reads)."""

from __future__ import annotations

import re
from pathlib import Path

from controller.core.settings import Settings
from tests.deploy import hcl
from tests.deploy.hcl import MODULE, ROOT

CONTROLLER_VARIABLE = re.compile(r"\bCONTROLLER_[A-Z_]+\b")


def test_every_tf_file_parses() -> None:
    tf_files = sorted(
        p.relative_to(MODULE) for p in MODULE.rglob("*.tf") if ".terraform" not in p.parts
    )
    parsed = [Path(name) for name in hcl.module().files] + [
        Path("examples/minimal") / name for name in hcl.example().files
    ]
    assert sorted(parsed) == tf_files
    assert len(tf_files) >= 10


def test_every_variable_and_local_used_is_declared_and_every_one_declared_is_used() -> None:
    for config in (hcl.module(), hcl.example()):
        used = config.references()
        declared = {("var", name) for name in config.variables} | {
            ("local", name) for name in config.locals
        }
        assert used - declared == set(), config.directory
        assert declared - used == set(), config.directory


def test_every_resource_referenced_is_declared() -> None:
    config = hcl.module()
    declared = set(config.resources()) | set(config.resources("data"))
    pattern = re.compile(r"\b((?:data\.)?aws_[a-z0-9_]+\.[a-z0-9_]+)")
    referenced = {m.group(1) for text in hcl.strings(config.files) for m in pattern.finditer(text)}
    assert referenced - declared == set()


def test_the_example_gives_the_module_what_it_needs_and_nothing_it_does_not_know() -> None:
    (block,) = hcl.example().blocks("module")
    arguments = block["infra_controller"]
    assert arguments["source"] == "../.."
    variables = hcl.module().variables
    given = set(arguments) - {"source"}
    assert given - set(variables) == set()
    required = {name for name, body in variables.items() if "default" not in body}
    assert required - given == set()


def test_no_name_of_the_earlier_system_is_hard_coded() -> None:
    for path in (ROOT / "deploy").rglob("*"):
        if path.is_file():
            text = path.read_text().lower()
            assert "city-guided" not in text and "cityguided" not in text, path


def settings_variables() -> set[str]:
    """The CONTROLLER_* variables the controller reads (Settings, README "Configuration")."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return {
        f"{prefix}{name}".upper()
        for name, field in Settings.model_fields.items()
        if field.validation_alias is None
    }


def test_the_task_passes_only_settings_the_controller_reads_and_the_ones_it_needs() -> None:
    text = "\n".join((MODULE / name).read_text() for name in hcl.module().files)
    passed = set(CONTROLLER_VARIABLE.findall(text))
    assert passed - settings_variables() == set()
    needed = {
        "CONTROLLER_DESIRED_STATE",
        "CONTROLLER_HTTP_ADDR",
        "CONTROLLER_STATE_STORE",
        "CONTROLLER_API_TOKEN",
        "CONTROLLER_WEBHOOK_SECRET",
        "CONTROLLER_GIT_TOKEN",
        "CONTROLLER_ACTIVATOR_ADDR",
        "CONTROLLER_ACTIVATOR_TARGET_GROUP",
        "CONTROLLER_CLOUDWATCH_NAMESPACE",
        "CONTROLLER_LEADER_ELECTION",
        "CONTROLLER_INTERVAL",
    }
    assert needed <= passed


def test_the_task_is_a_small_arm64_fargate_task_with_a_health_check_and_logs() -> None:
    module = hcl.module()
    variables = module.variables
    assert variables["cpu"]["default"] == 256
    assert variables["memory"]["default"] == 512
    assert variables["cpu_architecture"]["default"] == "ARM64"
    task = module.resources()["aws_ecs_task_definition.controller"]
    assert task["requires_compatibilities"] == ["FARGATE"]
    assert task["runtime_platform"][0]["cpu_architecture"] == "${var.cpu_architecture}"
    container = module.locals["container"]
    assert container["healthCheck"]["command"] == ["CMD", "python", "-c", "${local.health_check}"]
    assert "/healthz" in module.locals["health_check"]
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    assert container["user"] == "10001:10001"
    mount = container["mountPoints"][0]
    assert mount["containerPath"] == "${local.state_dir}"
    assert module.locals["state_dir"] == "/var/lib/infra-controller"
    group = module.resources()["aws_cloudwatch_log_group.controller"]
    assert group["retention_in_days"] == "${var.log_retention_days}"


def test_one_task_or_two_with_leader_election_never_two_acting_without_it() -> None:
    service = hcl.module().resources()["aws_ecs_service.controller"]
    assert service["desired_count"] == "${var.leader_election ? 2 : 1}"
    # without election the old task stops before the new one starts
    assert service["deployment_maximum_percent"] == "${var.leader_election ? 200 : 100}"
    assert service["deployment_minimum_healthy_percent"] == "${var.leader_election ? 50 : 0}"


def test_the_state_table_is_keyed_by_environment_with_point_in_time_recovery() -> None:
    table = hcl.module().resources()["aws_dynamodb_table.state"]
    assert table["hash_key"] == "environment"
    assert table["attribute"] == [{"name": "environment", "type": "S"}]
    assert table["point_in_time_recovery"] == [{"enabled": True}]
    assert table["billing_mode"] == "PAY_PER_REQUEST"


def test_the_activator_takes_ip_targets_and_the_security_group_lets_in_alb_and_prometheus() -> None:
    resources = hcl.module().resources()
    group = resources["aws_lb_target_group.activator"]
    assert group["target_type"] == "ip"
    assert group["port"] == "${var.activator_port}"
    activator = resources["aws_vpc_security_group_ingress_rule.activator_from_alb"]
    assert activator["from_port"] == activator["to_port"] == "${var.activator_port}"
    assert activator["referenced_security_group_id"] == "${each.value}"
    metrics = resources["aws_vpc_security_group_ingress_rule.metrics_from_prometheus"]
    assert metrics["from_port"] == metrics["to_port"] == "${var.http_port}"
    assert "var.prometheus_cidr_blocks" in metrics["for_each"]
    egress = [name for name in resources if name.startswith("aws_vpc_security_group_egress")]
    assert {resources[name]["to_port"] for name in egress} == {443, 22}


def test_the_codebuild_project_runs_the_buildspec_of_this_directory() -> None:
    project = hcl.module().resources()["aws_codebuild_project.terraform"]
    assert project["source"][0]["buildspec"] == '${file("${path.module}/../buildspec.yml")}'
    buildspec = (ROOT / "deploy" / "buildspec.yml").read_text()
    for step in ("terraform plan", "-destroy", "terraform apply", "TF_ACTION", "TF_ENVIRONMENT"):
        assert step in buildspec
