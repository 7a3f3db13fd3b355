"""The image's install (deploy/Dockerfile), made without a Docker engine and without a network:
the same build context, the product's wheel built from it, installed with pip into a fresh
environment, with the product's dependencies and nothing else (no extra: no emulator, no test
tool). The dependencies are this environment's installed distributions, copied file by file
from their records, at the versions pip resolved for pyproject.toml here."""

from __future__ import annotations

import importlib.metadata as metadata
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
APP = "/opt/infra-controller"
STATE = "/var/lib/infra-controller"


def stages() -> list[list[str]]:
    """The Dockerfile's instructions, continuation lines joined, grouped by stage."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    result: list[list[str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("FROM "):
            result.append([])
        result[-1].append(stripped)
    return result


def environment(app: Path, state: Path) -> dict[str, str]:
    """The final stage's ENV, its two directories moved to `app` and `state`."""
    found: dict[str, str] = {}
    for line in stages()[-1]:
        if line.startswith("ENV "):
            for pair in line.removeprefix("ENV ").split():
                key, _, value = pair.partition("=")
                value = value.replace(APP, str(app)).replace(STATE, str(state))
                found[key] = value.replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
    return found


def build_context(target: Path) -> Path:
    """What the build stage COPYs, copied into `target`."""
    target.mkdir()
    for line in stages()[0]:
        if line.startswith("COPY "):
            *sources, _ = line.removeprefix("COPY ").split()
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                    shutil.copytree(origin, target / origin.name, ignore=ignore)
                else:
                    shutil.copy2(origin, target / origin.name)
    return target


def dependencies() -> set[str]:
    """The distributions `pip install .` brings, without extras: the closure of the
    product's requirements over this environment's installed distributions."""
    product = [Requirement(r) for r in metadata.distribution("infra-controller").requires or []]
    wanted = [r for r in product if r.marker is None or r.marker.evaluate({"extra": ""})]
    seen: dict[str, set[str]] = {}
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        extras = seen.get(name, set()) | set(requirement.extras)
        if name in seen and extras == seen[name]:
            continue
        seen[name] = extras
        contexts = [{"extra": extra} for extra in {"", *extras}]
        for text in metadata.distribution(name).requires or []:
            nested = Requirement(text)
            if nested.marker is None or any(nested.marker.evaluate(c) for c in contexts):
                wanted.append(nested)
    return set(seen)


def _copy_installed(names: set[str], site: Path) -> None:
    here = Path(sysconfig.get_paths()["purelib"]).resolve()
    for name in names:
        distribution = metadata.distribution(name)
        for entry in distribution.files or []:
            path = Path(str(distribution.locate_file(entry))).resolve()
            if path.is_file() and path.is_relative_to(here):
                destination = site / path.relative_to(here)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)


def install(base: Path) -> Path:
    """The image's /opt/infra-controller, made under `base`; returns its directory."""
    context = build_context(base / "context")
    wheels = base / "wheels"
    wheels.mkdir()
    name = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, setuptools.build_meta as b; print(b.build_wheel(sys.argv[1]))",
            str(wheels),
        ],
        cwd=context,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    app = base / "app"
    subprocess.run([sys.executable, "-m", "venv", str(app)], check=True)
    python = str(app / "bin" / "python")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-index", "--no-deps", str(wheels / name)], check=True)
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    _copy_installed(dependencies(), Path(site))
    # as the image: no pip (nor the setuptools venv brings) in the environment, every module
    # compiled (the image's file system is read-only)
    subprocess.run([*pip, "uninstall", "-y", "setuptools", "pip"], check=True)
    subprocess.run([python, "-m", "compileall", "-q", "-j", "0", site], check=True)
    return app


def size(directory: Path) -> int:
    """Bytes on disk, as `du` counts them."""
    out = subprocess.run(["du", "-sk", str(directory)], check=True, capture_output=True, text=True)
    return int(re.split(r"\s", out.stdout)[0]) * 1024
