"""The alert rules (deploy/prometheus/alerts.yml) checked and unit-tested by promtool, the ECS
scrape example validated, and every alert covered by a test case that makes it fire."""

from __future__ import annotations

import subprocess

import yaml

from tests.deploy.prometheus import ROOT, alert_names, tool

DIRECTORY = ROOT / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], cwd=DIRECTORY, capture_output=True, text=True, timeout=60
    )


def test_the_rules_are_valid_and_pass_their_unit_tests() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_ecs_scrape_example_is_a_valid_configuration_with_the_rules() -> None:
    checked = promtool("check", "config", "scrape-ecs.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load((DIRECTORY / "scrape-ecs.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    assert [job["job_name"] for job in config["scrape_configs"]] == ["infra-controller"]


def test_every_alert_the_operator_needs_exists_and_a_test_makes_each_one_fire() -> None:
    names = set(alert_names())
    needed = {
        "InfraControllerDown",
        "InfraControllerReconcileStale",
        "InfraControllerDesiredStateInvalid",
        "InfraControllerEnvironmentError",
        "InfraControllerTerraformRunsFailing",
        "InfraControllerAwsErrors",
        "InfraControllerServiceAwakeWithoutTraffic",
        "InfraControllerNotificationsDropped",
    }
    assert needed <= names
    tests = yaml.safe_load((DIRECTORY / "alerts_test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for case in tests[0]["alert_rule_test"]  # the healthy controller
        if not case.get("exp_alerts")
    }
    assert fired == names
    assert quiet == names
