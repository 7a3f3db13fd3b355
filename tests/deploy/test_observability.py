"""What an operator watches, against a real controller: a real Prometheus (Debian's package)
scrapes `infra-controller sandbox` on 127.0.0.1 and evaluates deploy/prometheus/alerts.yml;
the Grafana dashboard's queries run on that data; every metric the dashboards and alerts name
exists in the real scrape; the CloudWatch dashboard draws only the metrics the controller
publishes (or the ALB metrics it reads) and queries log fields its real log lines carry.

One scenario runs once (`observed`): a healthy controller, a power change, an invalid desired
state, then the controller stopped. Each test checks what was seen."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.engine.cloudwatch import ServiceCount, ServiceMetricsPublisher
from controller.sandbox.emulator import free_port
from tests.deploy import hcl
from tests.deploy.prometheus import JOB, ROOT, Prometheus, alert_names

pytestmark = pytest.mark.integration
GRAFANA = ROOT / "deploy" / "grafana" / "infra-controller.json"
METRIC = re.compile(r"\b(?:infra_controller_[a-z_]+|up)\b")


@dataclass
class Observed:
    scrape: str = ""
    rules: list[dict[str, Any]] = field(default_factory=list)
    alerts_when_healthy: list[dict[str, Any]] = field(default_factory=list)
    queries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    alerts_when_invalid: list[dict[str, Any]] = field(default_factory=list)
    alerts_when_down: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)


def grafana_queries() -> list[str]:
    """Every panel's PromQL, with the dashboard's variables given values."""
    dashboard = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    values = {"$environment": ".*", "$__rate_interval": "1m", "$__range": "1h"}
    for name, value in values.items():
        exprs = [expr.replace(name, value) for expr in exprs]
    return exprs


def start_sandbox(directory: Path, port: int) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLLER_")}
    (directory / "temp").mkdir()
    with (directory / "stdout").open("w") as out, (directory / "stderr").open("w") as err:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "controller", "sandbox", "--log-format", "json"),
                *("--http-addr", f"127.0.0.1:{port}", "--alb-addr", f"127.0.0.1:{free_port()}"),
                *("--workdir", str(directory / "work")),
            ],
            cwd=directory,
            env={**base, "PYTHONPATH": str(ROOT), "TMPDIR": str(directory / "temp")},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )


def logs(directory: Path) -> list[dict[str, Any]]:
    lines = (directory / "stderr").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def named(alerts: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [alert for alert in alerts if alert["labels"]["alertname"] == name]


def active(prometheus: Prometheus, name: str) -> list[dict[str, Any]]:
    return named(prometheus.alerts(), name)


def scenario(
    directory: Path, prometheus: Prometheus, sandbox: subprocess.Popen[bytes], port: int
) -> Observed:
    seen = Observed()
    work = directory / "work"

    def first_pass_scraped() -> bool:
        assert sandbox.poll() is None, (directory / "stderr").read_text()[-3000:]
        passed = prometheus.value("infra_controller_last_successful_reconcile_timestamp_seconds")
        return bool(passed) and prometheus.value(f'up{{job="{JOB}"}}') == 1

    prometheus.wait(first_pass_scraped, "the controller's first pass, scraped", limit=60)
    prometheus.wait(lambda: all(r["health"] == "ok" for r in prometheus.rules()), "rules", 10)
    time.sleep(2.5)  # two more evaluations, on the data
    seen.rules, seen.alerts_when_healthy = prometheus.rules(), prometheus.alerts()
    # a power change (its log lines), then a desired state that does not validate
    desired = work / "desired_state.yaml"
    desired.write_text(desired.read_text().replace("power: on", "power: off"))
    prometheus.wait(
        lambda: prometheus.value('infra_controller_power_state{state="STOPPING"} == 1'), "STOPPING"
    )
    desired.write_text("version: 1\nenvironments:\n  demo:\n    power: maybe\n")
    prometheus.wait(lambda: active(prometheus, "InfraControllerDesiredStateInvalid"), "invalid")
    seen.alerts_when_invalid = prometheus.alerts()
    seen.queries = {expr: prometheus.query(expr) for expr in grafana_queries()}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        seen.scrape = answer.read().decode()
    sandbox.send_signal(signal.SIGINT)
    assert sandbox.wait(timeout=30) == 0
    prometheus.wait(lambda: active(prometheus, "InfraControllerDown"), "down")
    seen.alerts_when_down = prometheus.alerts()
    seen.logs = logs(directory)
    return seen


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    directory = tmp_path_factory.mktemp("observed")
    port = free_port()
    sandbox = start_sandbox(directory, port)
    prometheus = Prometheus(directory, f"127.0.0.1:{port}")
    try:
        yield scenario(directory, prometheus, sandbox, port)
    finally:
        prometheus.stop()
        if sandbox.poll() is None:
            sandbox.kill()
            sandbox.wait()


def test_every_rule_evaluates_on_the_real_data_and_none_fires_for_a_healthy_controller(
    observed: Observed,
) -> None:
    assert sorted(r["name"] for r in observed.rules) == sorted(alert_names())
    assert {r["health"] for r in observed.rules} == {"ok"}
    assert observed.alerts_when_healthy == []


def test_the_alerts_fire_on_what_the_real_controller_reports(observed: Observed) -> None:
    (invalid,) = named(observed.alerts_when_invalid, "InfraControllerDesiredStateInvalid")
    assert invalid["state"] == "pending"  # for: 2m
    assert invalid["labels"]["job"] == JOB
    (down,) = named(observed.alerts_when_down, "InfraControllerDown")
    assert down["labels"]["instance"] == invalid["labels"]["instance"]


def test_every_grafana_query_runs_and_the_main_panels_have_data(observed: Observed) -> None:
    assert len(observed.queries) >= 25
    with_data = {expr for expr, result in observed.queries.items() if result}
    for expr in ('up{job="infra-controller"}', "infra_controller_desired_state_valid"):
        assert expr in with_data
    assert any("infra_controller_power_state" in expr for expr in with_data)
    assert any("infra_controller_aws_api_calls_total" in expr for expr in with_data)


def scraped_names(text: str) -> set[str]:
    """Every name a query may use: the samples', and the families' (a family without a sample
    yet still names its _total, or its _bucket, _count and _sum)."""
    names = {"up"}
    for family in text_string_to_metric_families(text):
        names |= {family.name} | {sample.name for sample in family.samples}
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        names |= {family.name + s for s in suffixes.get(family.type, [])}
    return names


def test_every_metric_the_dashboard_and_the_alerts_use_exists_in_a_real_scrape(
    observed: Observed,
) -> None:
    used = {m for expr in grafana_queries() for m in METRIC.findall(expr)}
    rules = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    used |= set(METRIC.findall(rules))
    assert len(used) > 20
    assert used - scraped_names(observed.scrape) == set()


class Capture:
    def __init__(self) -> None:
        self.names: set[str] = set()

    async def call(self, service: str, operation: str, region: str, /, **params: Any) -> None:
        self.names |= {d["MetricName"] for d in params["MetricData"]}


async def test_the_cloudwatch_dashboard_draws_what_the_controller_publishes_or_reads() -> None:
    capture = Capture()
    publisher = ServiceMetricsPublisher(capture, "Custom")  # type: ignore[arg-type]
    await publisher.publish([ServiceCount("eu-west-3", "c", "s", 1)], datetime.now(UTC))
    idle = ROOT / "reconcilers" / "idle" / "reconciler.py"
    read = {n.value for n in ast.walk(ast.parse(idle.read_text())) if isinstance(n, ast.Constant)}
    drawn = hcl.module().locals["dashboard_metrics"]
    for namespace, name in drawn.values():
        if namespace == "AWS/ApplicationELB":
            assert name in read and namespace in read, name
        else:
            assert namespace == "${var.cloudwatch_namespace}"
            assert name in capture.names, name
    text = (hcl.MODULE / "dashboard.tf").read_text()
    assert text.count('"AWS/') == 2  # no metric drawn from outside dashboard_metrics


def query_fields(query: str) -> tuple[set[str], set[str]]:
    """The events a Logs Insights query filters on, and the log fields it reads."""
    events = set(re.findall(r"event = '([^']+)'", query))
    body = re.sub(r"'[^']*'|@\w+|\$\{[^}]*\}", " ", query)
    aliases = set(re.findall(r"\bas (\w+)", body))
    keywords = {"filter", "stats", "latest", "as", "by", "sort", "fields", "limit", "desc", "and"}
    keywords |= {"count", "max"}
    words = set(re.findall(r"\b[a-z_]+\b", body)) - keywords - aliases
    return events, words


def test_the_cloudwatch_log_queries_read_fields_real_log_lines_carry(observed: Observed) -> None:
    queries = hcl.module().locals["log_queries"]
    assert len(queries) == 3
    for query in queries.values():
        events, fields = query_fields(query)
        lines = [line for line in observed.logs if line.get("event") in events]
        assert lines, events
        for name in fields:
            assert any(name in line for line in lines), (name, events)
