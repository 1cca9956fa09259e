"""The leaderboard at a glance: the summary table, readable figures, and the everyday commands."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.report import figures
from bench.report.svg import Box
from tests.recordkit import make_record, seeded, write_records
from tests.test_report import make_report, svg_of, texts_of

SEEDS = 7  # the sign-flip test needs 6+ pairs to reach p < 0.05 after Holm


def glance_records() -> list[dict]:
    """wine with a teacher, a floor, scratch, kd and `best` (better than both on both axes), on
    the tables' held-out explainer (interventional Shapley)."""
    rng = np.random.default_rng(0)

    def noisy(level: float) -> list[float]:
        return [float(level + e) for e in rng.normal(0, 0.0002, SEEDS)]

    rows = [
        make_record("p", "wine", "teacher", 0, {"accuracy": 0.97, "expl_spearman_shapley": 1.0},
                    role="teacher"),
        make_record("p", "wine", "permuted_teacher", 0, {"expl_spearman_shapley": 0.30}, role="control"),
    ]  # fmt: skip
    for method, acc, agreement in (("scratch", 0.90, 0.50), ("kd", 0.91, 0.55),
                                   ("best", 0.95, 0.70)):  # fmt: skip
        rows += seeded(
            "p", "wine", method, {"accuracy": noisy(acc), "expl_spearman_shapley": noisy(agreement)}
        )
    return rows


def test_the_summary_marks_a_method_better_on_both_axes(tmp_path: Path) -> None:
    results = write_records(tmp_path / "results", glance_records())
    html = make_report(results, tmp_path / "site").read_text()
    glance = html[html.index('id="glance"') : html.index('id="claims"')]
    row = re.search(r'<tr class="student"><td class="method">best</td>(.*?)</tr>', glance, re.S)
    assert row is not None
    cells = re.findall(r'<td class="([^"]*)"[^>]*>(.*?)</td>', row.group(1), re.S)
    (acc_css, acc), (faith_css, faith) = cells
    assert "sig-better" in acc_css and acc.startswith("+0.050▲")
    assert "sig-better" in faith_css and faith.startswith("+0.200▲")
    assert "vs kd" in acc and "+0.040▲ vs kd" in acc
    # scratch shows its levels; the teacher and the strongest floor are references.
    assert re.search(r'<tr class="baseline"><td class="method">scratch</td><td[^>]*>0\.900', glance)
    assert "strongest floor" in glance and "0.300" in glance and "permuted_teacher" in glance


def crowded_points() -> list[figures.Point]:
    """Eight methods within 0.004 of one another (the old alternating offsets overlapped here),
    and the teacher."""
    points = [figures.Point(f"method_{i}", "student", 0.5 + 0.0005 * i, 0.97 + 0.0004 * (i % 3),
                            0.01, 0.05) for i in range(8)]  # fmt: skip
    return [*points, figures.Point("teacher", "teacher", 1.0, 1.0, math.nan, math.nan)]


def test_trade_off_labels_never_overlap_and_intervals_stay_valid(tmp_path: Path) -> None:
    points = crowded_points()
    frame = Box(0, 0, 560, 360)
    anchors = [(100 + 2 * i, 180 + (i % 3)) for i in range(8)] + [(540, 20)]
    legend = Box(380, 300, 555, 355)
    labels, unplaced = figures.place_labels([p.name for p in points], anchors, frame, [legend])
    assert labels and figures.overlapping_labels(labels) == []
    for label in labels:
        assert label.box.within(frame) and not label.box.overlaps(legend)
        others = [a for a, p in zip(anchors, points, strict=True) if p.name != label.name]
        assert not any(label.box.overlaps(Box(x - 5, y - 5, x + 5, y + 5)) for x, y in others)
    named = [label.name for label in labels] + [points[i].name for i in unplaced]
    assert sorted(named) == sorted(p.name for p in points)  # near its point or in the key
    figure = svg_of(
        figures.tradeoff_plot(points, "expl_spearman_ig", "accuracy", tmp_path / "t.svg")
    )
    assert {p.name for p in points} <= texts_of(figure)


def test_intervals_are_cut_at_the_values_a_metric_can_take() -> None:
    assert figures.clipped_error(0.98, 0.06, figures.valid_range("accuracy")) == pytest.approx(
        [0.06, 0.02]
    )
    assert figures.clipped_error(3.0, 5.0, figures.valid_range("concept_detectors")) == [3.0, 5.0]
    assert figures.valid_range("expl_spearman_ig") == (-1.0, 1.0)
    assert figures.valid_range("expl_spearman_ig_excess") == (-math.inf, math.inf)
    assert figures.clipped_error(0.5, math.nan, (0.0, 1.0)) == [0.0, 0.0]


# --- everyday commands -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wine_run(tmp_path_factory) -> Path:
    from bench.cli.main import main

    results = tmp_path_factory.mktemp("results")
    args = ["run", "--profile", "smoke", "--dataset", "wine", "--method", "scratch", "kd"]
    assert main([*args, "--results", str(results)]) == 0
    assert main([*args[:-2], "kd", "--set", "kd.temperature=2", "--results", str(results)]) == 0
    return results


def test_show_prints_one_run_by_name_or_run_id(cli, wine_run: Path) -> None:
    shown = cli("show", "wine/kd/seed0", "--results", wine_run)
    assert shown.code == 0
    assert shown.out.startswith("wine/kd/seed0 (profile smoke, student): ok")
    assert "parameters  alpha=" in shown.out and "temperature=4.0" in shown.out
    assert re.search(r"accuracy\s+0\.\d+ ↑", shown.out)
    assert "timings     train" in shown.out and "git " in shown.out
    run_id = re.search(r"run id\s+(\w+)", shown.out).group(1)
    by_id = cli("show", run_id[:8], "--results", wine_run)
    assert by_id.code == 0 and by_id.out == shown.out
    variant = cli("show", "wine/kd[temperature=2.0]/seed0", "--results", wine_run)
    assert variant.code == 0 and "temperature=2.0" in variant.out


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ("wine/kd/seed9", "no readable record of wine/kd/seed9"),
        ("../../etc/seed0", "names no run"),
        ("zz", "names no run"),
        ("ffffff", "no readable record of run id ffffff"),
    ],
)
def test_show_explains_what_it_could_not_find(cli, wine_run: Path, run: str, message: str) -> None:
    result = cli("show", run, "--results", wine_run)
    assert result.code == 2 and message in result.err


def test_show_prints_a_failed_runs_traceback(cli, tmp_path: Path) -> None:
    plugin = Path(__file__).parent / "plugins" / "broken_methods.py"
    args = ("--profile", "smoke", "--results", tmp_path)
    cli("run", "--dataset", "wine", "--method", "raises", "--plugin", plugin, *args)
    shown = cli("show", "wine/raises/seed0", "--results", tmp_path)
    assert "error       RuntimeError in the run: deliberate failure inside loss()" in shown.out
    assert "Traceback (most recent call last)" in shown.out


def test_status_lists_variants_on_disk(cli, wine_run: Path) -> None:
    status = cli("status", "--profile", "smoke", "--results", wine_run)
    assert status.code == 0
    assert "also on disk, outside the profile's plan (1 variants or methods):" in status.out
    assert "wine/kd[temperature=2.0]: 1 ok" in status.out


def test_list_columns_align_for_long_names(cli, tmp_path: Path) -> None:
    plugin = tmp_path / "long.py"
    plugin.write_text(
        "from bench import Method, register_method\n"
        "@register_method('a_method_with_a_very_long_name_indeed')\n"
        "class M(Method):\n    'A long one.'\n"
    )
    listed = cli("list", "methods", "--plugin", plugin)
    rows = [line for line in listed.out.splitlines() if line.strip() and not line[0].isspace()]
    second = {len(re.match(r"\S+\s+", line).group(0)) for line in rows}
    assert len(second) == 1  # the second column starts at the same place on every row


def test_every_option_has_help(capsys) -> None:
    from bench.cli.main import _parser

    parser = _parser()
    commands = parser._subparsers._group_actions[
        0
    ].choices  # the run/list/status/report/show parsers
    for name, sub in commands.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_report_ranks_your_runs_among_a_reference_set(tmp_path: Path, caplog) -> None:
    reference = write_records(tmp_path / "reference", glance_records())
    mine = seeded(
        "p", "wine", "mine", {"accuracy": [0.93] * SEEDS, "expl_spearman_ig": [0.6] * SEEDS}
    )
    # Two of kd's seeds rerun by the user: the row holds seeds of both sets.
    kd = [r for r in glance_records() if r["method"]["name"] == "kd" and r["seed"] < 2]
    for record in mine + kd:
        record["environment"] = {**record["environment"], "torch_threads": 4}
    results = write_records(tmp_path / "results", mine + kd)
    with caplog.at_level("WARNING"):
        html = make_report(results, tmp_path / "site", reference=reference).read_text()
    assert (
        "your runs and the reference differ in torch_threads: yours 4; reference None"
        in caplog.text
    )
    assert 'class="warning"' in html and "torch_threads" in html
    table = html[html.index('id="table-p-wine"') :]
    assert re.search(
        r'>mine</a> <span class="yours" title="all its seeds are your runs">yours<', table
    )
    assert re.search(rf'>kd</a> <span class="yours" [^>]*>2 of {SEEDS} seeds yours<', table)
    assert not re.search(r'>scratch</a> <span class="yours"', table)
    assert "best" in table  # the reference's rows are there too
    board = pd.read_csv(tmp_path / "site" / "leaderboard.csv")
    sources = board.groupby("method").source.first().to_dict()
    assert sources["mine"] == "yours" and sources["scratch"] == "reference"
    assert sources["kd"] == f"2 of {SEEDS} seeds yours"


def test_a_spread_of_rounding_noise_reads_zero(tmp_path: Path) -> None:
    records = seeded("p", "wine", "kd", {"accuracy": [0.1 + 0.2, 0.3, 0.3]})  # sd 3e-17
    html = make_report(write_records(tmp_path / "r", records), tmp_path / "site").read_text()
    assert ">0.3 ± 0<" in html and "e-17" not in html


def test_the_methods_list_is_grouped_by_family(tmp_path: Path) -> None:
    results = write_records(tmp_path / "results", glance_records())
    html = make_report(results, tmp_path / "site").read_text()
    methods = html[html.index('id="methods"') :]
    headings = re.findall(r"<h3>(.*?)</h3>", methods)
    assert headings == [
        "Baselines without a teacher signal",  # scratch
        "Logit-based distillation",  # kd
        "Other methods (plugins)",  # best: not a registered method
        "Reference rows: the teacher and the controls",
    ]
    logit = methods[methods.index("Logit-based") : methods.index("Other methods")]
    assert ">kd</a>" in logit and "Hinton" not in logit  # hand-written records cite nothing


def test_every_method_declares_a_known_family() -> None:
    from bench.core.vocabulary import FAMILIES
    from bench.train.method import METHODS, Method, register_method

    assert all(METHODS.get(name).family in FAMILIES for name in METHODS.names())
    assert {METHODS.get(n).family for n in ("kd", "fitnet", "e2kd", "gbdt2nn", "scratch")} == {
        "logit", "feature", "explanation", "tabular", "baseline",
    }  # fmt: skip

    class Odd(Method):
        family = "magic"

    with pytest.raises(ValueError, match="family 'magic' is not one of"):
        register_method("odd")(Odd)
