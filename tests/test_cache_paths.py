"""The user's cache folder follows the XDG base-directory rule; `XKD_*` variables override it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.core.paths import user_cache_root
from bench.data.downloads import cache_root as data_root
from bench.plan.catalogue import cache_root as catalogue_root


def test_the_cache_lies_under_xdg_cache_home_when_it_is_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XKD_CACHE_DIR", raising=False)
    monkeypatch.delenv("XKD_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_root() == tmp_path / "xkd-bench"
    assert catalogue_root() == tmp_path / "xkd-bench"
    assert data_root() == tmp_path / "xkd-bench" / "datasets"
    # A relative XDG_CACHE_HOME is ignored, as the specification says; so is an empty one.
    for ignored in ("relative/cache", ""):
        monkeypatch.setenv("XDG_CACHE_HOME", ignored)
        assert user_cache_root() == Path("~/.cache/xkd-bench").expanduser()


def test_the_projects_own_variables_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XKD_CACHE_DIR", str(tmp_path / "catalogue"))
    monkeypatch.setenv("XKD_DATA_DIR", str(tmp_path / "data"))
    assert catalogue_root() == tmp_path / "catalogue"
    assert data_root() == tmp_path / "data"
