"""The measurements mean what their names say (DESIGN §6): like with like, one class-score gauge,
nothing silently dropped, real floors, Grad-CAM where it localises, checks that a metric separates,
several teachers, and nothing chosen on the test split."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from bench.core.specs import teacher_spec_for
from bench.core.vocabulary import (
    FLOOR_ROWS,
    INPUT_EXPLAINER,
    LINEAR_EXPLAINER,
    OTHER_TEACHER,
    PERMUTED_CONTROL_ROW,
    REFERENCE_ROWS,
    UNTRAINED_CONTROL_ROW,
)
from bench.data.bundle import DATASETS, DatasetBundle, DatasetLoaderOptions, Split
from bench.explain.explainers import explain
from bench.explain.gradcam import MIN_SIDE, GradCamUnavailable, gradcam_layer
from bench.metrics import METRICS, ScoringContext, aggregate_samples, score
from bench.metrics.explanation import spearman_per_sample
from bench.metrics.quantus_metrics import _deletion_area, _spearman, faithfulness_correlation
from bench.models import build_model
from bench.plan.planner import Selection, make_plan
from bench.plan.profiles import PROFILES
from bench.report.separation import not_separating, separation_table
from bench.results.folder import ResultsFolder
from bench.run.context import RunOptions
from bench.run.predictors import (
    InputExplanations,
    LinearModelExplanations,
    StudentPredictor,
    derangement,
)
from bench.run.runner import run_suite
from bench.train.loop import TrainContext, seed_everything
from bench.train.method import METHODS
from bench.train.teachers import obtain_teacher
from tests.conftest import record_json

CPU = torch.device("cpu")
SMOKE = PROFILES.get("smoke")


def load(name: str) -> DatasetBundle:
    return DATASETS.get(name).load(DatasetLoaderOptions())


def smoke_teacher(name: str, results: Path, bundle: DatasetBundle | None = None, seed: int = 0):
    entry = DATASETS.get(name)
    bundle = bundle or load(name)
    spec = teacher_spec_for(SMOKE, entry.name, entry.version, entry.modality, seed)
    return obtain_teacher(spec, bundle, ResultsFolder(results).teacher_folder(spec), CPU), bundle


def scoring(bundle: DatasetBundle, model, teacher) -> ScoringContext:
    budget = SMOKE.budget(bundle.name, bundle.modality)
    return ScoringContext(bundle, model, teacher, 0.0, budget.n_explain, budget.explanation)


# --- 1. like with like --------------------------------------------------------------------------
def test_saliency_is_compared_with_absolute_treeshap(tmp_path: Path) -> None:
    """Saliency is |∇|: its agreement with a tree teacher must use |φ_T|, not signed φ_T."""
    teacher, bundle = smoke_teacher("breast_cancer", tmp_path)
    seed_everything(0)
    student = build_model("mlp", bundle.input_shape, 2, width=16, depth=2)
    ctx = scoring(bundle, StudentPredictor(student, CPU, 2), teacher)
    ctx.explanation = dataclasses.replace(ctx.explanation, explainers=("saliency",))
    got = METRICS.get("expl_spearman_saliency").compute(ctx)
    student_maps = ctx.attributions("saliency")
    phi = ctx.teacher_attributions("saliency")
    assert (student_maps >= 0).all() and (phi < 0).any()
    np.testing.assert_allclose(got, spearman_per_sample(student_maps, np.abs(phi)))
    # Before the rule, the metric was this signed comparison: a different number.
    assert not np.allclose(got, spearman_per_sample(student_maps, phi), equal_nan=True)
    assert METRICS.get("expl_spearman_saliency").settings["form"] == "absolute"
    assert METRICS.get("expl_spearman_ig").settings["form"] == "signed"


# --- 3. nothing silently dropped ------------------------------------------------------------------
def test_undefined_samples_are_left_out_of_the_mean_but_counted_in_the_coverage() -> None:
    value, meta = aggregate_samples(np.array([1.0, np.nan, 3.0, np.inf]))
    assert value == 2.0
    assert meta["coverage"] == 0.5 and meta["n_scored"] == 2 and meta["n_asked"] == 4
    assert math.isnan(aggregate_samples(np.array([np.nan]))[0])
    assert aggregate_samples(0.75)[1]["coverage"] == 1.0


def test_a_student_with_constant_explanations_has_zero_coverage(tmp_path: Path) -> None:
    teacher, bundle = smoke_teacher("wine", tmp_path)
    silent = nn.Linear(bundle.input_shape[0], 3)
    with torch.no_grad():
        silent.weight.zero_()
    values, metadata = score(scoring(bundle, StudentPredictor(silent, CPU, 3), teacher))
    assert math.isnan(values["expl_spearman_gxi"])
    assert metadata["expl_spearman_gxi"]["coverage"] == 0.0
    assert metadata["accuracy"]["coverage"] == 1.0
    assert all("coverage" in meta for meta in metadata.values())


def test_quantus_faithfulness_is_scored_per_sample(tmp_path: Path) -> None:
    """Quantus' own aggregate is np.mean: one NaN sample would make the whole value null."""
    teacher, bundle = smoke_teacher("wine", tmp_path)
    ctx = scoring(bundle, teacher, teacher)
    scores = faithfulness_correlation(ctx, "ig")
    assert scores.shape == (ctx.explanation.n_quantus,)


# --- 4. floors that are real ----------------------------------------------------------------------
def test_derangement_moves_every_sample() -> None:
    for n in (2, 3, 10, 257):
        order = derangement(n)
        assert sorted(order.tolist()) == list(range(n))
        assert (order != np.arange(n)).all()
    np.testing.assert_array_equal(derangement(50), derangement(50))


def test_every_teacher_has_its_control_rows(tmp_path: Path) -> None:
    plan = make_plan(Selection(profile="smoke", datasets=("wine",), methods=("scratch",)))
    assert run_suite(plan, RunOptions(results=tmp_path, device=CPU)).exit_status == 0
    teacher_spec = plan.teachers[0]
    records = {
        row: record_json(tmp_path, "smoke", "wine", row, teacher_spec.seed)
        for row in REFERENCE_ROWS
    }
    assert all(r is not None and r["status"] == "ok" for r in records.values())
    assert {r["role"] for r in records.values()} == {"teacher", "control"}
    # The permuted row: the teacher's TreeSHAP of another test sample against this one's.
    teacher, bundle = smoke_teacher("wine", tmp_path)
    ctx = scoring(bundle, teacher, teacher)
    phi = teacher.explain("ig", ctx.explain_x, ctx.explain_targets, ctx.explain_settings)
    expected = np.nanmean(spearman_per_sample(phi[derangement(len(phi))], phi))
    permuted = records[PERMUTED_CONTROL_ROW]["metrics"]
    assert permuted["expl_spearman_ig"] == pytest.approx(expected)
    assert "accuracy" not in permuted  # it has no predictions of its own
    # The untrained student is a whole model: scored on every metric, with near-chance accuracy.
    untrained = records[UNTRAINED_CONTROL_ROW]["metrics"]
    assert "accuracy" in untrained and "expl_spearman_ig" in untrained
    assert untrained["teacher_agreement"] < 0.8
    # The floors that need no teacher are explanations only, like the permuted row.
    for row in (INPUT_EXPLAINER.name, LINEAR_EXPLAINER.name):
        assert "accuracy" not in records[row]["metrics"]
        assert "expl_spearman_ig" in records[row]["metrics"]
    # Another teacher seed, the first after the profile's, scored as a student: a level, whose
    # agreement is its TreeSHAP against this teacher's.
    other_seed = SMOKE.other_teacher_seed
    other = records[OTHER_TEACHER.name]
    assert f"seed {other_seed}" in other["method"]["citation"]
    assert "accuracy" in other["metrics"]
    other_teacher, _ = smoke_teacher("wine", tmp_path, bundle, seed=other_seed)
    other_phi = other_teacher.explain(
        "ig", ctx.explain_x, ctx.explain_targets, ctx.explain_settings
    )
    level = np.nanmean(spearman_per_sample(other_phi, phi))
    assert other["metrics"]["expl_spearman_ig"] == pytest.approx(level)
    assert not OTHER_TEACHER.floor and OTHER_TEACHER.name not in FLOOR_ROWS


def test_the_data_only_floor_is_gradient_times_input_of_a_logistic_regression(
    tmp_path: Path,
) -> None:
    teacher, bundle = smoke_teacher("wine", tmp_path)
    control = LinearModelExplanations(teacher, bundle)
    ctx = scoring(bundle, control, teacher)
    linear = nn.Linear(bundle.train.x.shape[1], bundle.num_classes)
    with torch.no_grad():  # centred weights, any bias: centred class scores ignore the bias
        linear.weight.copy_(torch.as_tensor(control.class_weights))
    expected = explain(
        "gxi", linear, ctx.explain_x, ctx.explain_targets, 3, ctx.explain_settings, CPU
    )
    got = control.explain("ig", ctx.explain_x, ctx.explain_targets, ctx.explain_settings)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    # Centred over classes, like every model's class scores: the weights of a feature sum to 0.
    np.testing.assert_allclose(control.class_weights.sum(axis=0), 0.0, atol=1e-6)


def test_features_at_the_baseline_are_left_out_of_ig_agreement(tmp_path: Path) -> None:
    """On digits the black pixels are the IG baseline: IG is 0 there for every model, so the
    input image itself used to agree with the teacher's IG about as well as a student."""
    teacher, bundle = smoke_teacher("digits", tmp_path)
    control = InputExplanations(teacher)
    ctx = scoring(bundle, control, teacher)
    left_out = ctx.at_baseline
    assert 0.3 < left_out.mean() < 0.8  # about half the pixels are black
    teacher_ig = ctx.teacher_attributions("ig")
    assert np.all(teacher_ig[left_out] == 0)
    value = aggregate_samples(METRICS.get("expl_spearman_ig").compute(ctx))[0]
    image = ctx.attributions("ig")
    rows = [
        spearmanr(image[i][~left_out[i]], teacher_ig[i][~left_out[i]])[0] for i in range(len(image))
    ]
    assert value == pytest.approx(np.nanmean(rows))
    with_zeros = np.nanmean(spearman_per_sample(image, teacher_ig))
    assert with_zeros > value  # the shared zeros were what made the input image agree


# --- 5. Grad-CAM where it means something ---------------------------------------------------------
def test_grad_cam_layer_has_a_documented_minimum_resolution() -> None:
    digits_teacher = build_model("resnet", (1, 8, 8), 10, width=8, blocks=1)
    assert gradcam_layer(digits_teacher, (1, 8, 8)) == "layer2"  # layer3 is 2×2
    assert gradcam_layer(build_model("resnet", (3, 32, 32), 10), (3, 32, 32)) == "layer3"
    assert gradcam_layer(build_model("small_cnn", (1, 8, 8), 10), (1, 8, 8)) == "block2"
    with pytest.raises(GradCamUnavailable, match=f"{MIN_SIDE}×{MIN_SIDE}"):
        gradcam_layer(build_model("small_cnn", (1, 2, 2), 10), (1, 2, 2))


def test_grad_cam_metrics_are_not_computed_where_no_layer_qualifies(tmp_path: Path) -> None:
    teacher, bundle = smoke_teacher("digits", tmp_path)
    coarse = bundle.train.x[:, :, :2, :2]  # 2×2 images: no stage of 4×4 exists
    tiny = dataclasses.replace(
        bundle,
        train=Split(coarse, bundle.train.y),
        val=Split(bundle.val.x[:, :, :2, :2], bundle.val.y),
        test=Split(bundle.test.x[:, :, :2, :2], bundle.test.y),
        test_masks=None,
    )
    student = build_model("small_cnn", tiny.input_shape, 10, width=4, depth=2)
    ctx = scoring(tiny, StudentPredictor(student, CPU, 10), teacher)
    assert not ctx.can_explain("gradcam")
    assert not METRICS.get("expl_spearman_gradcam").applies_to(ctx)


def test_teacher_grad_cam_maps_differ_between_images(tmp_path: Path) -> None:
    """On 8×8 digits the default teacher's last block is 2×2: its Grad-CAM upsampled was a ramp
    shared by every image (median pairwise correlation 0.79 here, 0.82–0.998 in the gallery). At
    the 4×4 layer the maps are the images' own (median 0.34)."""
    default = PROFILES.get("default")
    entry = DATASETS.get("digits")
    bundle = load("digits")
    spec = teacher_spec_for(default, entry.name, entry.version, entry.modality)
    teacher = obtain_teacher(spec, bundle, ResultsFolder(tmp_path).teacher_folder(spec), CPU)
    budget = default.budget("digits", "image")
    ctx = ScoringContext(bundle, teacher, teacher, 0.0, budget.n_explain, budget.explanation)
    maps = ctx.attributions("gradcam")[:32].reshape(32, -1)
    correlation = np.corrcoef(maps)[np.triu_indices(32, k=1)]
    assert np.nanmedian(correlation) < 0.6


# --- 6. pixel flipping and the separation check ---------------------------------------------------
def test_deletion_areas_are_on_the_share_of_features_removed() -> None:
    """Bounded whatever the number of steps: Quantus' dx = 1 made the area grow with them."""
    start = np.array([1.0])
    for steps in (4, 16, 64):
        flat = np.ones((1, steps))
        np.testing.assert_allclose(_deletion_area(flat, start), [1.0])
    np.testing.assert_allclose(_deletion_area(np.array([[0.5, 0.0]]), start), [0.5])


def _record(row: str, role: str, seed: int, value: float, sd: float | None, n: int) -> dict:
    return {
        "schema_version": 2,
        "run_id": f"{row}-{seed}",
        "status": "ok",
        "profile": "p",
        "dataset": {"name": "d"},
        "role": role,
        "seed": seed,
        "method": {"name": row},
        "metrics": {"mprt_gradcam": value},
        "metric_metadata": {
            "mprt_gradcam": {
                "category": "quantus_randomisation",
                "higher_is_better": False,
                "sample_sd": sd,
                "n_scored": n,
            }
        },
    }


def test_a_metric_that_separates_nothing_is_flagged() -> None:
    # The teacher is within noise of the random control on one of two teacher seeds: flagged.
    records = [
        _record("teacher", "teacher", 0, 0.10, 0.3, 32),
        _record("teacher", "teacher", 1, 0.12, 0.3, 32),
        _record("random_explainer", "control", 0, 0.50, 0.3, 32),
        _record("random_explainer", "control", 1, 0.15, 0.3, 32),
    ]
    table = separation_table(records)
    assert not table.separates.iloc[0]
    assert not_separating(table) == {("p", "d", "mprt_gradcam")}
    records[3]["metrics"]["mprt_gradcam"] = 0.6
    assert separation_table(records).separates.iloc[0]


# --- 8. more than one teacher ---------------------------------------------------------------------
def test_students_pair_with_teachers_of_several_seeds() -> None:
    plan = make_plan(Selection(profile="default", datasets=("wine",), methods=("kd", "scratch")))
    seeds = PROFILES.get("default").teacher_seeds
    assert len(seeds) >= 3
    assert [t.seed for t in plan.teachers] == list(seeds)
    for run in plan.runs:
        assert run.teacher.seed == seeds[run.seed % len(seeds)]
    kd = {run.seed: run for run in plan.runs if run.method == "kd"}
    assert len({run.teacher.key for run in kd.values()}) == len(seeds)
    # Paired runs (same seed, other method) share their teacher.
    for run in plan.runs:
        assert run.teacher == kd[run.seed].teacher


# --- 11. nothing selected on the test split -------------------------------------------------------
def _scrambled_test(bundle: DatasetBundle) -> DatasetBundle:
    rng = np.random.default_rng(1)
    test = Split(
        rng.normal(size=bundle.test.x.shape).astype(np.float32),
        rng.permutation(bundle.test.y),
    )
    return dataclasses.replace(bundle, test=test, test_masks=None)


@pytest.mark.parametrize("dataset", ["wine", "digits"])
def test_training_and_model_selection_never_read_the_test_split(
    tmp_path: Path, dataset: str
) -> None:
    """Teacher early stopping, best-epoch selection and every method's training are the same
    whatever the test split holds: replacing it with noise changes no weight."""
    bundle = load(dataset)
    outcomes = []
    for name, data in (("real", bundle), ("scrambled", _scrambled_test(bundle))):
        teacher, _ = smoke_teacher(dataset, tmp_path / name, data)
        budget = SMOKE.budget(dataset, data.modality)
        states = {}
        for method_name in ("kd", "kd_expl" if data.modality == "tabular" else "e2kd"):
            seed_everything(0)
            ctx = TrainContext(data, teacher, budget.student_training, budget.student, CPU, 0)
            student = METHODS.get(method_name)().fit(ctx)
            states[method_name] = (ctx.best_epoch, ctx.history, student.state_dict())
        outcomes.append((teacher.predict_logits(bundle.val.x), states))
    (real_logits, real), (other_logits, other) = outcomes
    np.testing.assert_array_equal(real_logits, other_logits)
    for method_name, (epoch, history, state) in real.items():
        assert other[method_name][0] == epoch and other[method_name][1] == history
        for key, value in state.items():
            torch.testing.assert_close(other[method_name][2][key], value, rtol=0, atol=0)


def test_randomisation_similarity_leaves_constant_explanations_undefined() -> None:
    """An untrained student's Grad-CAM is constant on some images; Quantus' own batched Spearman
    then raised AttributeError and failed the whole run (the concept_shapes control row)."""
    import quantus

    rng = np.random.default_rng(0)
    a, b = rng.random((3, 16)), rng.random((3, 16))
    a[1] = 0.0
    with pytest.raises(AttributeError):
        quantus.similarity_func.correlation_spearman(a[1:2], b[1:2], batched=True)
    got = _spearman(a, b, batched=True)
    assert math.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2]], spearman_per_sample(a[[0, 2]], b[[0, 2]]))
