"""The image (deploy/Dockerfile) without a Docker engine: its shape read from the file, and its
install (tests/deploy/image.py) run as the image runs it: the application directory read-only,
the state directory the only one written, the container health check answering."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.sandbox.emulator import free_port
from tests.deploy import hcl, image

pytestmark = pytest.mark.integration
BASE = "python:3.12-slim-bookworm"
# the installed environment (the image adds the base and git): 70 MiB measured here
SIZE_BUDGET = 110 * 1024 * 1024


def test_the_dockerfile_builds_in_two_stages_and_runs_as_a_user_with_git_and_ssh() -> None:
    build, final = image.stages()
    assert build[0] == f"FROM {BASE} AS build" and final[0] == f"FROM {BASE}"  # multi-arch
    text = "\n".join(final)
    assert "apt-get install --no-install-recommends -y git openssh-client " in text
    for tool in ("gcc", "build-essential", "make ", "moto", "[dev", "[sandbox", "pip install"):
        assert tool not in text, tool
    assert f"COPY --from=build {image.APP} {image.APP}" in final
    assert "USER 10001:10001" in final
    assert f"WORKDIR {image.STATE}" in final
    assert f'VOLUME ["{image.STATE}"]' in final
    assert "--only-binary=:all:" in "\n".join(build)  # no compiler needed, on either arch


def test_the_image_and_the_task_definition_check_health_the_same_way() -> None:
    (healthcheck,) = [line for line in image.stages()[-1] if line.startswith("HEALTHCHECK ")]
    assert healthcheck.endswith(f'CMD ["python", "-c", "{hcl.module().locals["health_check"]}"]')


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The image's /opt/infra-controller, read-only."""
    installed = image.install(tmp_path_factory.mktemp("image"))
    writable = [p for p in [installed, *installed.rglob("*")] if not p.is_symlink()]
    for path in writable:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    yield installed
    for path in writable:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_the_install_is_small_and_carries_no_emulator_and_no_tool(app: Path) -> None:
    size = image.size(app)
    print(f"the image's environment: {size / 2**20:.0f} MiB")  # the image: base + this
    assert size < SIZE_BUDGET
    site = next(app.glob("lib/python3*/site-packages"))
    present = {p.name.lower() for p in site.iterdir()}
    for absent in ("moto", "pytest", "mypy", "ruff", "hypothesis", "pip", "setuptools", "hcl2"):
        assert absent not in present, absent
    assert "controller" in present and "aiobotocore" in present


def unprivileged() -> list[str]:
    """As root, the process keeps uid 0 but loses every capability: file permissions then
    hold for it as for the image's user (a read-only directory stays read-only)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root's capabilities"
    return [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]


def git_source(directory: Path) -> str:
    """A git repository holding a desired state; its git+file:// URL."""
    directory.mkdir()
    (directory / "desired_state.yaml").write_text(
        "version: 1\nenvironments:\n  lab:\n    power: on\n"
    )
    git = ["git", "-C", str(directory), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "desired"]):
        subprocess.run([*git, *args], check=True)
    return f"git+file://{directory}#branch=main&path=desired_state.yaml"


def healthy(app: Path, env: dict[str, str]) -> bool:
    """The task definition's health check command, run with the image's python."""
    command = [str(app / "bin" / "python"), "-c", hcl.module().locals["health_check"]]
    return subprocess.run(command, env=env, capture_output=True, timeout=10).returncode == 0


def test_the_controller_runs_with_a_read_only_app_writing_only_its_state_directory(
    app: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "tmp").mkdir()  # made by the image
    port = free_port()
    env = {
        **image.environment(app, state),
        "CONTROLLER_HTTP_ADDR": f"127.0.0.1:{port}",  # 0.0.0.0 in the image
        "CONTROLLER_DESIRED_STATE": git_source(tmp_path / "repo"),
        "CONTROLLER_INTERVAL": "2s",
        "AWS_REGION": "eu-west-3",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing here calls AWS; nothing leaves
    }
    assert env["CONTROLLER_STATE_STORE"] == f"file://{state}/state.json"
    before = sorted(str(p) for p in app.rglob("*"))
    log = tmp_path / "stderr"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*unprivileged(), str(app / "bin" / "infra-controller"), "run"],
            cwd=state,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 20
        while not (state / "state.json").exists() or not healthy(app, env):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as ready:
            assert ready.status == 200
        (clone,) = (state / "tmp").iterdir()  # the git source's, in TMPDIR
        assert clone.name.startswith("infra-controller-git-")
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=15)
    logs = log.read_text()
    assert code == 0, logs
    assert "Traceback" not in logs and "Permission denied" not in logs and "Read-only" not in logs
    assert sorted(str(p) for p in app.rglob("*")) == before
    assert {"state.json", "tmp"} <= {p.name for p in state.iterdir()}
