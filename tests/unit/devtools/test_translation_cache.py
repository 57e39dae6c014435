"""The SAM translation is done once per template content and then read from the cache."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from devtools.cloud import template as tpl
from devtools.cloud.template import load_template, translate, translations


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_template()


def test_the_second_translation_comes_from_the_cache(sam: dict[str, Any], tmp_path: Path) -> None:
    before = translations.copy()

    first = translate(sam, cache=tmp_path)
    second = translate(sam, cache=tmp_path)

    assert translations["translated"] - before["translated"] == 1
    assert translations["cached"] - before["cached"] == 1
    assert second == first
    assert "AWS::Serverless::Function" not in {r["Type"] for r in first["Resources"].values()}
    [cached] = tmp_path.glob("sam-*.json")
    assert cached.stat().st_size > 0


def test_another_content_region_or_parameter_is_translated_again(
    sam: dict[str, Any], tmp_path: Path
) -> None:
    translate(sam, cache=tmp_path)
    changed = copy.deepcopy(sam)
    changed["Description"] = "another description"
    before = translations["translated"]

    translate(changed, cache=tmp_path)
    translate(sam, cache=tmp_path, region="eu-west-1")
    translate(sam, cache=tmp_path, parameter_values={"WorkerService": "true"})

    assert translations["translated"] - before == 3
    assert len(list(tmp_path.glob("sam-*.json"))) == 4


def test_a_damaged_cache_file_is_translated_again(sam: dict[str, Any], tmp_path: Path) -> None:
    expected = translate(sam, cache=tmp_path)
    [cached] = tmp_path.glob("sam-*.json")
    cached.write_text('{"Resources": ')  # cut short, as by a crash in the middle of a write
    before = translations["translated"]

    assert translate(sam, cache=tmp_path) == expected
    assert translations["translated"] - before == 1


def test_the_cache_directory_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tpl.CACHE_DIR_VARIABLE, str(tmp_path / "elsewhere"))
    assert tpl.cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(tpl.CACHE_DIR_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tpl.cache_dir() == tmp_path / "xdg" / "celery-lambda"


def test_an_unwritable_cache_costs_only_the_next_translation(
    sam: dict[str, Any], tmp_path: Path
) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")

    translated = translate(sam, cache=blocked)

    assert translated["Resources"]
