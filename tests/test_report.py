"""The leaderboard exports and the static site: numbers, ranks, claims, pages, figures, escaping."""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
from markupsafe import escape

from bench.cli.main import main
from bench.data.bundle import DATASETS, DatasetLoaderOptions
from bench.plan.catalogue import CACHE_ENV
from bench.report.claims import CLAIMS
from bench.report.compute import compute
from bench.report.leaderboard import COLUMNS, aggregate, t_interval, without_fallback_copies
from bench.report.render import render
from bench.results.folder import ResultsFolder
from bench.train.method import METHODS
from tests.recordkit import make_record, seeded, write_records


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("report")
    args = ["run", "--profile", "smoke", "--dataset", "wine", "--seeds", "0", "1", "--method"]
    args += ["scratch", "label_smoothing", "kd"]
    assert main([*args, "--results", str(results)]) == 0
    return results


def make_report(results: Path, out: Path, **options: object) -> Path:
    """The report as `python -m bench report` makes it: computed, then written under `out`."""
    return render(compute(results, **options), out)


SVG = "{http://www.w3.org/2000/svg}"


def svg_of(path: Path) -> ElementTree.Element:
    """The figure at `path`, parsed: it must be well-formed SVG."""
    root = ElementTree.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return root


def texts_of(figure: ElementTree.Element) -> set[str]:
    """The figure's texts; a point named in the key beside the axes counts by its name."""
    return {(t.text or "").split(": (")[0] for t in figure.iter(f"{SVG}text")}


def copy_of(results: Path, tmp_path: Path) -> Path:
    target = tmp_path / "results"
    shutil.copytree(results, target)
    return target


def test_leaderboard_rows_are_mean_std_ci_over_seeds(two_seeds: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_report(two_seeds, site)
    table = pd.read_csv(site / "leaderboard.csv")
    values = [
        json.loads((two_seeds / f"runs/smoke/wine/kd/seed{s}.json").read_text())["metrics"][
            "log_loss"
        ]
        for s in (0, 1)
    ]
    row = table[(table.method == "kd") & (table.metric == "log_loss")].iloc[0]
    assert row["n"] == 2
    assert row["mean"] == pytest.approx(np.mean(values))
    assert row["std"] == pytest.approx(np.std(values, ddof=1))
    low, high = t_interval(np.asarray(values))
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((low, high))
    teacher = table[(table.method == "teacher") & (table.metric == "accuracy")].iloc[0]
    assert teacher["role"] == "teacher" and teacher["n"] == 1
    exported = json.loads((site / "leaderboard.json").read_text())["rows"]
    assert len(exported) == len(table)


def test_t_interval_by_hand() -> None:
    low, high = t_interval(np.array([1.0, 2.0, 3.0]))
    # mean 2, sd 1, n 3, t(0.975, 2) = 4.302653
    assert (low, high) == pytest.approx((2 - 4.302653 / 3**0.5, 2 + 4.302653 / 3**0.5), rel=1e-6)
    assert all(np.isnan(t_interval(np.array([1.0]))))


def test_index_has_a_table_per_dataset_with_teacher_row(two_seeds: Path, tmp_path: Path) -> None:
    index = make_report(two_seeds, tmp_path / "site")
    html = index.read_text()
    assert '">wine <span class="cat">' in html
    assert '<tr class="teacher reference"><td class="method" data-value="teacher">' in html
    for method in ("scratch", "label_smoothing", "kd"):
        assert f'<a href="method-{method}.html">{method}</a></td>' in html
    frame = aggregate(ResultsFolder(two_seeds).iter_records())
    acc = frame[(frame.method == "kd") & (frame.metric == "accuracy")].iloc[0]
    assert f"{acc['mean']:.4g} ± {acc['std']:.2g}" in html  # spreads to two digits
    # Two seeds rank nothing: a header carries "=" (no paired test tells two students apart) or,
    # greyed, "⚠" (the metric fails a reliability check: here the ANOVA over methods).
    for header in ("accuracy", "log_loss"):
        assert re.search(f">{header} (=|⚠) [↑↓]<", html), header
    assert "does not tell the students apart" in html
    assert "http://" not in html and "https://" not in html


def test_markup_in_records_is_escaped_and_markup_in_names_is_refused(
    two_seeds: Path, tmp_path: Path, caplog
) -> None:
    results = copy_of(two_seeds, tmp_path)
    path = results / "runs/smoke/wine/kd/seed0.json"
    record = json.loads(path.read_text())
    record["method"]["citation"] = "<script>alert(1)</script>"  # free text: shown, escaped
    path.write_text(json.dumps(record))
    named = results / "runs/smoke/wine/scratch/seed0.json"
    record = json.loads(named.read_text())
    record["method"]["name"] = "<b>x</b>"  # a name is also a file name: the record is corrupt
    named.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        make_report(results, tmp_path / "site")
    assert "method name '<b>x</b>' is not a safe name" in caplog.text
    pages = [p.read_text() for p in (tmp_path / "site").glob("*.html")]
    assert all(
        re.fullmatch(r"[A-Za-z0-9_.-]+\.html", p.name) for p in (tmp_path / "site").glob("*.html")
    )
    assert not any("<script>alert(1)</script>" in page or "<b>x</b>" in page for page in pages)
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in page for page in pages)


def test_corrupt_and_foreign_files_are_skipped_with_a_warning(
    two_seeds: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results = copy_of(two_seeds, tmp_path)
    (results / "runs/smoke/wine/kd/seed0.json").write_text('{"truncated": ')
    (results / "runs/smoke/wine/notes.json").write_text('{"hello": "world"}')
    with caplog.at_level(logging.WARNING):
        html = make_report(results, tmp_path / "site").read_text()
    assert "kd/seed0.json" in caplog.text and "notes.json" in caplog.text
    assert '<a href="method-kd.html">kd</a></td>' in html  # seed 1 still counts


def test_exports_keep_the_leaderboard_columns_and_add_ranks_and_comparisons(
    two_seeds: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    make_report(two_seeds, site)
    table = pd.read_csv(site / "leaderboard.csv")
    assert list(table.columns[: len(COLUMNS)]) == COLUMNS
    assert {"rank", "rank_of"} <= set(table.columns)
    students = table[table.role == "student"]
    assert table[table.role != "student"]["rank"].isna().all()
    # Exactly the metrics that pass the reliability checks are ranked (none, on two seeds).
    reliability = pd.read_csv(site / "metric_reliability.csv")
    ranked = set(students.metric[students["rank"].notna()])
    assert ranked == set(reliability.metric[reliability.ranks_it])
    assert {"accuracy", "log_loss"} <= set(reliability.metric[~reliability.discriminates])

    comparisons = pd.read_csv(site / "comparisons.csv")
    row = comparisons[
        (comparisons.method == "kd")
        & (comparisons.baseline == "scratch")
        & (comparisons.metric == "log_loss")
    ].iloc[0]
    loss = {
        (m, s): json.loads((two_seeds / f"runs/smoke/wine/{m}/seed{s}.json").read_text())[
            "metrics"
        ]["log_loss"]
        for m in ("kd", "scratch")
        for s in (0, 1)
    }
    diffs = np.array([loss["kd", s] - loss["scratch", s] for s in (0, 1)])
    assert row["n"] == 2 and row["mean_diff"] == pytest.approx(diffs.mean())
    assert row["cohens_dz"] == pytest.approx(diffs.mean() / diffs.std(ddof=1))
    # The p-value is the exact sign-flip test's (it was the t-test's): of the four sign patterns
    # of two differences, those whose |mean| reaches the observed one.
    patterns = [abs((diffs * [a, b]).mean()) for a in (1, -1) for b in (1, -1)]
    expected = np.mean([m >= abs(diffs.mean()) * (1 - 1e-9) for m in patterns])
    assert row["p_value"] == pytest.approx(expected) and row["p_method"] == "exact"
    assert set(comparisons.baseline) == {"scratch", "kd"}

    exported = json.loads((site / "leaderboard.json").read_text())
    assert set(exported) == {
        "rows", "comparisons", "average_ranks", "claims", "separation", "metric_reliability",
        "friedman",
        "training",
    }  # fmt: skip
    assert len(exported["comparisons"]) == len(comparisons)
    assert (site / "average_ranks.csv").exists() and (site / "claims.csv").exists()


def test_the_report_writes_nothing_beside_the_records(two_seeds: Path, tmp_path: Path) -> None:
    # Before: the exports went into the results folder, where a report of one profile overwrote
    # the tables of a report of all of them.
    def files() -> dict[str, int]:
        return {str(p.relative_to(two_seeds)): p.stat().st_mtime_ns for p in two_seeds.rglob("*")}

    before = files()
    make_report(two_seeds, tmp_path / "site")
    assert files() == before
    written = {p.name for p in (tmp_path / "site").iterdir()}
    assert {"index.html", "figures", "leaderboard.csv", "leaderboard.json", "claims.csv"} <= written


def method_cells(html: str, dataset: str) -> list[str]:
    """The row names of one dataset's leaderboard table on the index, top to bottom."""
    start = html.index(f'">{dataset} <span class="cat">')
    table = html[start : html.index("</table>", start)]
    return re.findall(r'<td class="method" data-value="([^"]*)">', table)


def test_index_orders_rows_and_shows_claims(two_seeds: Path, tmp_path: Path) -> None:
    html = make_report(two_seeds, tmp_path / "site").read_text()
    # The teacher, its control rows (the floors, then another teacher seed), then the baselines.
    assert method_cells(html, "wine") == [
        "teacher", "random_explainer", "permuted_teacher", "untrained_student",
        "input_explainer", "linear_explainer", "other_teacher", "scratch", "label_smoothing", "kd",
    ]  # fmt: skip
    # Two seeds per method tell no students apart: no metric ranks them, and the track says so.
    assert 'id="track-smoke-tabular"' in html and "No average rank: no metric" in html
    assert 'class="sortable leaderboard"' in html and 'data-first="descending"' in html
    # None of the claims' methods or metrics are in these records: each says so, none vanishes.
    # (Four claims since e2KD got its own.)
    # Every claim and every part of it, under its primary and under the paper's metrics in the
    # Claims panel, and once more (the primary verdict) in the answer at the top.
    shown = 3 * (len(CLAIMS) + sum(len(claim.parts) for claim in CLAIMS))
    assert html.count('<span class="verdict v-not-measured">not measured</span>') == shown
    assert "concept detectors than students trained from scratch" in html
    assert "no records with metric concept_detectors" in html


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.targets.append(value)


def test_every_page_is_offline_and_its_links_resolve(two_seeds: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_report(two_seeds, site)
    pages = sorted(site.glob("*.html"))
    names = {p.name for p in pages}
    assert {
        "index.html",
        "dataset-smoke-wine.html",
        "method-kd.html",
        "method-teacher.html",
    } <= names
    for page in pages:
        text = page.read_text()
        assert "http://" not in text and "https://" not in text, page.name
        parser = Links()
        parser.feed(text)
        for target in parser.targets:
            assert not target.startswith("//"), (page.name, target)
            local = target.split("#")[0]
            if local:
                assert (site / local).is_file(), (page.name, target)


def test_dataset_page_has_figures_and_paired_comparisons(two_seeds: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_report(two_seeds, site)
    html = (site / "dataset-smoke-wine.html").read_text()
    for kind in ("tradeoff", "seeds"):
        figure = svg_of(site / "figures" / f"smoke-wine-{kind}.svg")
        assert {"scratch", "label_smoothing", "kd"} <= texts_of(figure), kind
        assert f'src="figures/smoke-wine-{kind}.svg"' in html
    assert "Pareto front:" in html and "expl_spearman_ig" in html
    assert "<h3>vs. scratch</h3>" in html and "<h3>vs. kd</h3>" in html
    assert "Cohen&#39;s d_z" in html


def test_method_page_has_description_citation_params_and_provenance(
    two_seeds: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    make_report(two_seeds, site)
    html = (site / "method-kd.html").read_text()
    assert str(escape(METHODS.get("kd").describe())) in html
    record = json.loads((two_seeds / "runs/smoke/wine/kd/seed1.json").read_text())
    assert str(escape(record["method"]["citation"])) in html
    assert "<td>temperature</td><td>4.0</td>" in html
    for seed in (0, 1):
        run = json.loads((two_seeds / f"runs/smoke/wine/kd/seed{seed}.json").read_text())
        assert f"<code>{run['run_id']}</code>" in html
    revision = record["environment"]["git_revision"]
    if revision:
        assert f"<code>{revision[:10]}</code>" in html
    assert "torch " + record["environment"]["versions"]["torch"] in html
    teacher = (site / "method-teacher.html").read_text()
    assert "Reference row" in teacher and "num_leaves" in teacher


def test_concept_detector_claim_and_bar_chart_from_records(tmp_path: Path) -> None:
    results = tmp_path / "results"
    image = {"modality": "image", "explainers": ("gradcam",)}
    write_records(
        results,
        [
            make_record("p", "shapes", "teacher", 0, {"concept_detectors": 30}, role="teacher",
                        **image),
            # Seven seeds: the sign-flip test cannot reach p < 0.05 with three; each direction is
            # a part of the claim, with a Holm family of its own (2/128 < 0.05).
            *seeded("p", "shapes", "scratch", {"concept_detectors": [10, 11, 12, 10, 11, 12, 11]},
                    **image),
            *seeded("p", "shapes", "kd", {"concept_detectors": [15, 17, 16, 15, 17, 16, 16]},
                    **image),
            *seeded("p", "shapes", "label_smoothing",
                    {"concept_detectors": [7, 8, 8, 7, 8, 8, 8]}, **image),
        ],
    )  # fmt: skip
    site = tmp_path / "site"
    html = make_report(results, site).read_text()
    claims = pd.read_csv(site / "claims.csv")
    concept = claims[claims.claim == "kd_concept_detectors"]
    assert set(concept.test_verdict) == {"supported"}
    assert set(concept.claim_verdict) == {"supported"}
    kd = concept[concept.method == "kd"].iloc[0]
    assert kd.mean_diff == pytest.approx(5.0)  # d = [5, 6, 4, 5, 6, 4, 5]
    assert kd.p_value == pytest.approx(2 / 128) and kd.p_holm == pytest.approx(2 / 128)
    assert set(concept.part_verdict) == {"supported"}
    assert "kd &gt; scratch on concept_detectors" in html
    assert '<span class="verdict v-supported">supported</span>' in html
    bars = svg_of(site / "figures/p-shapes-concepts.svg")
    assert len(bars.findall(f"{SVG}rect")) >= 4  # a bar per row, besides frame and background
    assert {"teacher", "scratch", "kd", "label_smoothing"} <= texts_of(bars)
    page = (site / "dataset-p-shapes.html").read_text()
    assert "Concept detectors per model" in page
    assert "No attribution gallery" in page  # hand-written records store no maps


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("digits")
    args = ["run", "--profile", "smoke", "--dataset", "digits", "--method", "scratch"]
    assert main([*args, "--seeds", "0", "--results", str(results)]) == 0
    return results


def test_image_runs_keep_attribution_maps_for_the_gallery(digits_run: Path, tmp_path: Path) -> None:
    folder = digits_run / "runs/smoke/digits"
    teacher = json.loads((folder / "teacher/seed0.json").read_text())
    student = json.loads((folder / "scratch/seed0.json").read_text())
    entry = teacher["attribution_maps"]
    assert entry["explainer"] == teacher["budget"]["explanation"]["explainers"][0]
    assert student["attribution_maps"]["test_index"] == entry["test_index"]
    assert len(entry["test_index"]) == 4
    maps = np.load(folder / "teacher" / entry["file"], allow_pickle=False)
    student_maps = np.load(folder / "scratch/seed0.maps.npy", allow_pickle=False)
    assert maps.shape[0] == 4 and maps.shape[-2:] == (8, 8) and maps.dtype == np.float32
    assert student_maps.shape == maps.shape and not np.allclose(student_maps, maps)
    inputs = np.load(folder / "teacher" / entry["inputs_file"], allow_pickle=False)
    bundle = DATASETS.get("digits").load(DatasetLoaderOptions())
    np.testing.assert_array_equal(inputs, bundle.test.x[entry["test_index"]])

    site = tmp_path / "site"
    make_report(digits_run, site)
    gallery = svg_of(site / "figures/smoke-digits-gallery.svg")
    tiles = [i.get("href") for i in gallery.iter(f"{SVG}image")]
    rows = [t for t in texts_of(gallery) if t in ("input", "teacher") or " (seed " in t]
    assert {"input", "teacher", "scratch (seed 0)"} <= set(rows)
    assert len(tiles) == 4 * len(rows)  # the 4 explained images in every row
    for tile in tiles:
        assert base64.b64decode(tile.removeprefix("data:image/png;base64,"))[:4] == b"\x89PNG"
    page = (site / "dataset-smoke-digits.html").read_text()
    assert 'src="figures/smoke-digits-gallery.svg"' in page and "No attribution gallery" not in page


# --- the report without torch ---------------------------------------------------------------------
def _report_in_a_fresh_process(results: Path, site: Path, cache: Path) -> set[str]:
    """`python -m bench report` with the catalogue cache `cache`; the modules it imported."""
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bench", "report", "--results", str(results),
         "--out", str(site)],
        env={**os.environ, CACHE_ENV: str(cache)}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {line.split("|")[-1].strip() for line in traced.stderr.splitlines() if "|" in line}


def described(records: list[dict]) -> list[dict]:
    """The records as the runner writes them now: each names its method's family and says
    what the method does."""
    for record in records:
        record["method"].update(family="logit", description=f"{record['method']['name']} does x.")
    return records


def test_a_report_of_records_that_describe_their_methods_imports_no_torch(tmp_path: Path) -> None:
    """The report reads records against the metrics' declared bounds, which the catalogue
    holds: built once after the code changed (importing torch), then read from its cache. With
    the cache built, nothing of torch's is imported, and the records describe their methods."""
    records = [make_record("p", "wine", "teacher", 0, {"accuracy": 0.97}, role="teacher")]
    records += described(seeded("p", "wine", "kd", {"accuracy": [0.9, 0.91, 0.92]}))
    results = write_records(tmp_path / "results", records)
    cache = tmp_path / "cache"
    _report_in_a_fresh_process(results, tmp_path / "first", cache)  # builds the catalogue
    assert len(list(cache.glob("catalogue-*.json"))) == 1
    imported = _report_in_a_fresh_process(results, tmp_path / "site", cache)
    assert {"bench.report.render", "pandas"} <= imported  # the trace does list the report's imports
    assert not imported & {"torch", "captum", "quantus", "lightgbm", "sklearn", "matplotlib"}
    assert "kd does x." in (tmp_path / "site" / "method-kd.html").read_text()


def test_records_that_do_not_describe_their_method_are_described_from_the_catalogue(
    tmp_path: Path,
) -> None:
    results = write_records(tmp_path / "results", seeded("p", "wine", "kd", {"accuracy": [0.9]}))
    cache = tmp_path / "cache"
    _report_in_a_fresh_process(results, tmp_path / "site", cache)
    assert list(cache.glob("catalogue-*.json"))  # built, for this record only
    html = (tmp_path / "site" / "method-kd.html").read_text()
    assert str(escape(METHODS.get("kd").describe())) in html


def test_trade_off_figure_uses_the_held_out_explainer_not_the_trained_one(tmp_path: Path) -> None:
    """On images the profile's first explainer is Grad-CAM, which e2kd trains on: the trade-off
    figure plots IG agreement, which no method trains on."""
    values = {"accuracy": [0.9, 0.91], "expl_spearman_gradcam": [0.5, 0.6]}
    values |= {"expl_spearman_ig": [0.2, 0.25]}
    records = [
        record
        for method in ("scratch", "kd", "e2kd")
        for record in seeded(
            "p", "digits", method, values, modality="image", explainers=("gradcam", "ig")
        )
    ]
    data = compute(write_records(tmp_path, records))
    (page,) = data.pages
    (tradeoff,) = [f for f in page.figures if f.kind == "tradeoff"]
    assert "(expl_spearman_ig)" in tradeoff.caption


def test_screens_are_marked_and_neither_ranked_nor_best(tmp_path: Path) -> None:
    # Three methods at twelve seeds, different seed by seed; a screen at three seeds whose mean
    # is the highest. Ranked together on three shared seeds nothing would separate; the screen
    # is left out of the ranks, marked, and not shown as the column's best.
    base = list(np.linspace(0.70, 0.75, 12))
    records = [
        *seeded("p", "toy", "scratch", {"accuracy": base}),
        *seeded("p", "toy", "kd", {"accuracy": [v + 0.01 for v in base]}),
        *seeded("p", "toy", "label_smoothing", {"accuracy": [v + 0.02 for v in base]}),
        *seeded("p", "toy", "dkd", {"accuracy": [0.95, 0.96, 0.97]}),
    ]
    site = tmp_path / "site"
    make_report(write_records(tmp_path / "results", records), site)
    table = pd.read_csv(site / "leaderboard.csv")
    accuracy = table[table.metric == "accuracy"].set_index("method")
    assert accuracy.loc[["scratch", "kd", "label_smoothing"], "rank"].tolist() == [3, 2, 1]
    assert math.isnan(accuracy.loc["dkd", "rank"]) and accuracy.loc["dkd", "screen"]
    assert not accuracy.loc[["scratch", "kd", "label_smoothing"], "screen"].any()
    rows = {
        re.search(r'data-value="(\w+)"', row).group(1): row.split("</tr>")[0]
        for row in (site / "index.html").read_text().split("<tr")
        if 'data-value="' in row
    }
    assert 'class="screen" title="a screen: 3 seeds' in rows["dkd"]
    assert 'class="screen"' not in rows["kd"]
    assert 'class="best' not in rows["dkd"] and 'class="best' in rows["label_smoothing"]


def test_several_result_sets_make_one_site_and_a_dataset_in_two_is_refused(
    cli, tmp_path: Path
) -> None:
    real = write_records(tmp_path / "real", seeded("real", "toy", "kd", {"accuracy": [0.8, 0.9]}))
    embedded = write_records(
        tmp_path / "embedded", seeded("default", "toy", "kd", {"accuracy": [0.7, 0.6]})
    )
    site = tmp_path / "site"
    result = cli("report", "--results", real, embedded, "--out", site)
    assert result.code == 0, result.err
    table = pd.read_csv(site / "leaderboard.csv")
    means = table[table.metric == "accuracy"].set_index("profile")["mean"]
    assert means.to_dict() == pytest.approx({"real": 0.85, "default": 0.65})
    index = (site / "index.html").read_text()
    # The real-data profile first, whichever order the sets were named in.
    assert index.index("dataset-real-toy.html") < index.index("dataset-default-toy.html")
    twice = cli("report", "--results", real, tmp_path / "real", "--out", tmp_path / "again")
    assert twice.code == 2
    assert "real/toy has runs in both" in twice.err and "--reference" in twice.err


def test_the_own_explainer_is_shown_only_where_some_model_has_one() -> None:
    """`own` is Grad-CAM for a network without an explainer of its own: on a dataset where that
    holds for every record its columns repeat Grad-CAM's and are left out; where one model's
    differ (XDistillation's decoder), every row keeps them."""
    rows = []
    # On "mnist" one model's own is undefined where its Grad-CAM is not: not a copy either.
    for dataset, xdistill_own in (("digits", 0.9), ("concept_shapes", 0.4), ("mnist", math.nan)):
        for record, (method, gradcam, own) in enumerate(
            (
                ("kd", 0.4, 0.4),
                ("xdistill", 0.4, xdistill_own),
                ("random_explainer", math.nan, math.nan),
            )
        ):
            for metric, value in (("expl_spearman_gradcam", gradcam), ("expl_spearman_own", own)):
                rows.append({"record": f"{dataset}{record}", "profile": "default",
                             "dataset": dataset, "method": method, "metric": metric,
                             "value": value})  # fmt: skip
    kept = without_fallback_copies(pd.DataFrame(rows))
    shown = kept.groupby("dataset").metric.apply(set).to_dict()
    assert shown["digits"] == {"expl_spearman_gradcam", "expl_spearman_own"}
    assert shown["concept_shapes"] == {"expl_spearman_gradcam"}
    assert shown["mnist"] == shown["digits"]
    assert len(kept[kept.dataset == "digits"]) == 6


def test_an_unfinished_row_is_marked_incomplete_and_its_page_says_the_plan_is_not_done(
    tmp_path: Path,
) -> None:
    # The default profile plans wine's claim methods (kd among them) at twelve seeds and the
    # others at three: kd with twelve is done, scratch with one of its three is not.
    base = list(np.linspace(0.70, 0.75, 12))
    records = [
        *seeded("default", "wine", "kd", {"accuracy": base}),
        *seeded("default", "wine", "kd_expl", {"accuracy": [v + 0.01 for v in base]}),
        *seeded("default", "wine", "gbdt2nn", {"accuracy": [v + 0.02 for v in base]}),
        *seeded("default", "wine", "scratch", {"accuracy": [0.9]}),
    ]
    site = tmp_path / "site"
    make_report(write_records(tmp_path / "results", records), site)
    accuracy = pd.read_csv(site / "leaderboard.csv").query("metric == 'accuracy'")
    planned = accuracy.set_index("method").seeds_planned
    assert (
        planned[["kd", "kd_expl", "gbdt2nn"]].tolist() == [12, 12, 12] and planned["scratch"] == 3
    )
    page = (site / "dataset-default-wine.html").read_text()
    assert "Not complete: wine: 37 of" in page
    rows = {
        re.search(r'data-value="(\w+)"', row).group(1): row.split("</tr>")[0]
        for row in page.split("<tr")
        if 'data-value="' in row
    }
    assert 'title="1 of 3 planned seeds done; a screen: 1 seeds' in rows["scratch"]
    assert ">incomplete</span>" in rows["scratch"] and ">screen</span>" not in rows["scratch"]
    assert "incomplete" not in rows["kd"]
