"""The desired state is parsed once per revision: a pass whose file did not change reuses the
document parsed before (a thousand environments take 0.4 s of CPU to parse), start-up included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.desired import file_source, loader
from controller.desired.file_source import FileSource
from tests.conftest import MakeController

VALID = "version: 1\nenvironments:\n  a:\n    power: on\n"


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The documents the file source parses (parsed for real)."""
    seen: list[str] = []
    real = loader.parse_desired_state

    def recording(text: str, path: str, **kwargs: Any) -> Any:
        seen.append(text)
        return real(text, path, **kwargs)

    monkeypatch.setattr(file_source, "parse_desired_state", recording)
    return seen


async def test_a_file_whose_content_did_not_change_is_not_parsed_again(
    tmp_path: Path, parses: list[str]
) -> None:
    path = tmp_path / "ds.yaml"
    path.write_text(VALID)
    source = FileSource(str(path))
    first = await source.fetch()
    path.write_text(VALID)  # written again, same content: the same revision
    again = await source.fetch()
    assert again is first
    assert len(parses) == 1


async def test_an_edited_file_is_parsed_again_and_an_edit_back_too(
    tmp_path: Path, parses: list[str]
) -> None:
    path = tmp_path / "ds.yaml"
    path.write_text(VALID)
    source = FileSource(str(path))
    first = await source.fetch()
    path.write_text(VALID.replace("power: on", "power: off"))
    edited = await source.fetch()
    path.write_text(VALID)
    back = await source.fetch()
    assert edited.revision != first.revision and back.revision == first.revision
    assert edited.loaded is not None and edited.loaded.state.environments["a"].power == "off"
    assert len(parses) == 3


async def test_an_invalid_revision_is_parsed_once_and_its_fix_at_once(
    tmp_path: Path, parses: list[str]
) -> None:
    path = tmp_path / "ds.yaml"
    path.write_text("version: 2\n")
    source = FileSource(str(path))
    assert (await source.fetch()).loaded is None
    assert (await source.fetch()).loaded is None
    path.write_text(VALID)
    assert (await source.fetch()).loaded is not None
    assert len(parses) == 2


async def test_start_up_and_the_passes_after_parse_an_unchanged_file_once(
    make_controller: MakeController, parses: list[str]
) -> None:
    h = make_controller(VALID)
    await h.controller.refresh_desired_state()  # as `run` does before its first pass
    for _ in range(3):
        await h.controller.reconcile_once()
    assert len(parses) == 1
