"""The committed reference tables are what the report computes from the committed records.

`reference/default-v7/` holds the records of one default-profile run and the tables the report
derived from them (README's "The reference result set"), `reference/real-v1/` those of the real
profile so far. Rebuilding the tables from those records must give the committed files again,
number for number. (The earlier sets, `default-v1/` to `-v6/`, keep the tables their own commits
derived: the ranks have changed since, e.g. screens are no longer ranked, and an old set's tables
are the record of what it published.) The CSVs write every float in full
(Python's shortest repr, which reads back to the same double), so they are compared exactly,
floats included; a change in the last bit of a mean or a p-value is a change of what the
reference says. The site is rendered into a temporary folder; the reference folder is only read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.report.compute import ReportData, compute
from bench.report.render import EXPORTS, render

REFERENCES = Path(__file__).resolve().parent.parent / "reference"
TABLES = ("leaderboard", *EXPORTS)


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture(scope="module", params=["default-v7", "real-v1"])
def reference(request: pytest.FixtureRequest) -> Path:
    return REFERENCES / request.param


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory, reference: Path) -> tuple[ReportData, Path]:
    before = _files(reference)
    data = compute(reference)
    site = tmp_path_factory.mktemp("reference-site")
    render(data, site)
    assert _files(reference) == before  # nothing written beside the records
    return data, site


@pytest.mark.parametrize("name", TABLES)
def test_each_committed_csv_is_rebuilt_exactly(
    rebuilt: tuple[ReportData, Path], reference: Path, name: str
) -> None:
    _, site = rebuilt
    committed = pd.read_csv(reference / f"{name}.csv", keep_default_na=False)
    written = pd.read_csv(site / f"{name}.csv", keep_default_na=False)
    # Column by column first, so that a failure names the column; then byte for byte.
    assert list(written.columns) == list(committed.columns)
    for column in committed.columns:
        pd.testing.assert_series_equal(written[column], committed[column], check_exact=True)
    assert (site / f"{name}.csv").read_bytes() == (reference / f"{name}.csv").read_bytes()


def test_the_committed_json_is_rebuilt_exactly(
    rebuilt: tuple[ReportData, Path], reference: Path
) -> None:
    _, site = rebuilt
    committed = json.loads((reference / "leaderboard.json").read_text())
    written = json.loads((site / "leaderboard.json").read_text())
    assert set(written) == {"rows", *EXPORTS} == set(committed)
    for key in committed:
        assert written[key] == committed[key], key
    assert (site / "leaderboard.json").read_bytes() == (reference / "leaderboard.json").read_bytes()


def test_the_frames_are_the_exports(rebuilt: tuple[ReportData, Path], reference: Path) -> None:
    """What `compute` returns is what `render` writes: the site's tables come from these frames."""
    data, site = rebuilt
    for name in TABLES:
        frame = data.leaderboard if name == "leaderboard" else getattr(data, name)
        assert len(pd.read_csv(site / f"{name}.csv")) == len(frame) > 0, name
    assert data.n_records == len(list((reference / "runs").rglob("seed*.json")))


def test_every_reference_record_lies_within_its_metrics_declared_bounds(reference: Path) -> None:
    """A bound declared too tight would throw away real records: every record of the reference
    sets, read against the declared bounds, is read as without them."""
    from bench.metrics import declared_bounds
    from bench.results.folder import ResultsFolder

    bounds = declared_bounds()
    within = [r.run_id for r in ResultsFolder(reference, bounds).iter_records()]
    assert within == [r.run_id for r in ResultsFolder(reference).iter_records()]
    checked = {name for r in ResultsFolder(reference).iter_records() for name in r.metrics}
    assert len(checked & set(bounds)) >= 40  # the check covers the metrics these sets hold
