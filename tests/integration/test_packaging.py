"""What a production install carries: no AWS emulator (it is the `sandbox` extra), and a
sandbox command that says how to get one instead of failing with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_the_emulator_is_an_extra_not_a_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("moto")]
    assert any(d.startswith("moto[server]") for d in project["optional-dependencies"]["sandbox"])


@pytest.fixture(scope="module")
def install_without_the_extra(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh interpreter environment with this project's dependencies but no moto: what
    `pip install .` gives. Returns its python."""
    base = tmp_path_factory.mktemp("production")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base / "venv")], check=True)
    python = base / "venv" / "bin" / "python"
    deps = base / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith("moto"):
            (deps / entry.name).symlink_to(entry)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "dependencies.pth").write_text(f"{deps}\n")
    return python


def run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "controller", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_the_extra_the_product_runs_and_the_sandbox_says_how_to_install_it(
    install_without_the_extra: Path, tmp_path: Path
) -> None:
    python = install_without_the_extra
    probe = subprocess.run([str(python), "-c", "import moto"], capture_output=True, text=True)
    assert probe.returncode != 0  # the emulator really is absent
    valid = run(python, "validate", str(ROOT / "desired_state.yaml"), cwd=tmp_path)
    assert valid.returncode == 0, valid.stderr
    sandbox = run(python, "sandbox", cwd=tmp_path)
    assert sandbox.returncode == 2
    assert "pip install 'infra-controller[sandbox]'" in sandbox.stderr
    assert "Traceback" not in sandbox.stderr


def _image_environment(state_dir: Path) -> dict[str, str]:
    """The image's CONTROLLER_* settings (deploy/Dockerfile), its state directory moved here."""
    text = (ROOT / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line.removeprefix("ENV ").split():
                key, _, value = pair.partition("=")
                found[key] = value.replace("/var/lib/infra-controller", str(state_dir))
    return {k: v for k, v in found.items() if k.startswith("CONTROLLER_")}


def test_the_image_writes_only_to_its_state_directory(
    install_without_the_extra: Path, tmp_path: Path, fake_terraform: Path
) -> None:
    app, state = tmp_path / "app", tmp_path / "state"
    app.mkdir()
    state.mkdir()
    (app / "desired_state.yaml").write_text(
        "version: 1\nenvironments:\n  lab:\n    power: on\n"
        f"    terraform: {{runner: cli, workdir: {fake_terraform}}}\n"
    )
    settings = _image_environment(state)
    assert settings["CONTROLLER_STATE_STORE"] == f"file://{state}/state.json"
    result = subprocess.run(
        [str(install_without_the_extra), "-m", "controller", "run", "--once"],
        cwd=app,
        env={**os.environ, **settings, "PYTHONPATH": str(ROOT), "AWS_REGION": "eu-west-3"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in app.iterdir()) == ["desired_state.yaml"]  # nothing else
    assert (state / "state.json").exists()
    assert list((state / "runs").glob("*.json"))  # the run's record, in the state directory
    assert "git" in (ROOT / "deploy" / "Dockerfile").read_text()  # git sources need it
