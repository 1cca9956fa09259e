"""The committed reference tables are what the report computes from the committed records.

`reference/default-v8/` holds the records of one default-profile run and the tables the report
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
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.report.compute import ReportData, compute
from bench.report.render import EXPORTS, render

REFERENCES = Path(__file__).resolve().parent.parent / "reference"
TABLES = ("leaderboard", *EXPORTS)


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture(scope="module", params=["default-v8", "real-v1"])
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


# What the site must never print (issue 30): a signed zero, a sign on zero, exponent notation, a
# p-value with more than two significant digits. Style and script blocks are not text, nor are
# the sort keys in `data-value`, which hold each number in full for the table's sorting script,
# nor code spans, which hold identifiers (a run id such as 7232825228e67665 is hexadecimal).
_NOT_TEXT = re.compile(r"<(style|script|code)\b.*?</\1>|data-value=\"[^\"]*\"", re.S)
BAD_NUMBERS = {
    "signed zero": re.compile(r"(?<![\w.])[-+−]0\.0+(?!\d)"),
    "sign on zero": re.compile(r"(?<![\w.])[-+−]0(?![\d.])"),
    "exponent": re.compile(r"(?<![\w#.-])\d+(?:\.\d+)?e[-+]?\d+(?!\w)", re.I),
    "long p-value": re.compile(r"\bp(?: \(Holm\))? = (0\.0*[1-9]\d{2,})"),
    "long Holm p-value": re.compile(r"Holm[^<>=]{0,60}= (0\.0*[1-9]\d{2,})"),
    "rounding noise": re.compile(r"(?<![\w.])[-+−]?0\.0{10,}\d"),
}


def badly_formatted(html: str) -> list[tuple[str, str]]:
    text = _NOT_TEXT.sub(" ", html)
    return [(kind, m.group(0)) for kind, p in BAD_NUMBERS.items() for m in p.finditer(text)]


def test_no_page_of_the_site_prints_a_number_badly(rebuilt: tuple[ReportData, Path]) -> None:
    _, site = rebuilt
    found = {
        page.name: badly_formatted(page.read_text())[:5]
        for page in sorted(site.glob("*.html"))
        if badly_formatted(page.read_text())
    }
    assert found == {}


def test_the_number_scan_finds_each_bad_format() -> None:
    """The check above can fail: each pattern it looks for is found, and good numbers pass."""
    bad = (
        "Δ -0.000 [+0, 1.2e-05] p = 0.002865, Holm-adjusted over the methods = 0.0123, "
        "Δ +0.00000000000000004"
    )
    assert [kind for kind, _ in badly_formatted(bad)] == [
        "signed zero", "sign on zero", "exponent", "long p-value", "long Holm p-value",
        "rounding noise",
    ]  # fmt: skip
    good = (
        "<style>a{color:#4e9a06}</style>Δ +0.081 [0, -0.0004] p = 0.0029, p (Holm) = 1, n = 12 "
        "<code>7232825228e67665</code>"
    )
    assert badly_formatted(good) == []


def test_a_setting_is_printed_as_given_without_an_exponent() -> None:
    from bench.report.numbers import format_exact

    assert [format_exact(v) for v in (1e-05, 0.5, 4.0, 20 / 240, True, 3)] == [
        "0.00001", "0.5", "4.0", "0.08333333333333333", "True", "3",
    ]  # fmt: skip
    assert badly_formatted(format_exact(1e-05)) == []


def test_a_difference_of_rounding_noise_is_zero_and_a_small_one_keeps_its_first_digit() -> None:
    from bench.report.numbers import format_signed, format_value

    same = [0.1, 0.2, 0.3]
    noise = np.mean(same) - np.mean(same[::-1])  # the same numbers summed in another order
    assert noise != 0 and format_signed(noise) == "0"
    assert [format_signed(v) for v in (0.0003, -0.0003, 0.081)] == ["+0.0003", "-0.0003", "+0.081"]
    assert [format_value(v) for v in (-2.6e-18, 3e-5)] == ["0", "0.00003"]
