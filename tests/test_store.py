"""Records are written atomically and non-finite numbers become null."""

import json
import os
import stat
from pathlib import Path

import pytest

from bench.core.atomic import write_json_atomic
from bench.results.folder import read_record


def test_write_is_atomic_and_nan_becomes_null(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "record.json"
    write_json_atomic(path, {"metrics": {"a": float("nan"), "b": [1.0, float("inf")], "c": 2.5}})
    assert json.loads(path.read_text()) == {"metrics": {"a": None, "b": [1.0, None], "c": 2.5}}
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]


def test_a_write_interrupted_midway_keeps_the_old_record(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "record.json"
    write_json_atomic(path, {"v": 1})

    def disk_failure(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", disk_failure)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_read_record_refuses_foreign_json(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    assert read_record(path) is None
    assert read_record(tmp_path / "absent.json") is None


def test_temporaries_of_a_killed_writer_are_removed_for_that_run_only(tmp_path: Path) -> None:
    from bench.core.atomic import remove_temporaries

    for name in (".seed1.json.abc.tmp", ".seed1.maps.npy.def.tmp", ".seed10.json.ghi.tmp"):
        (tmp_path / name).write_text("half")
    (tmp_path / "seed1.json").write_text("{}")
    remove_temporaries(tmp_path / "seed1.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".seed10.json.ghi.tmp", "seed1.json"]


def test_written_files_get_the_permissions_open_would_give(tmp_path: Path) -> None:
    """`mkstemp` makes 0600 files: a site or record set shared with others would be unreadable."""
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    written = tmp_path / "written.json"
    write_json_atomic(written, {"v": 1})
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
