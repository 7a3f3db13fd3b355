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
