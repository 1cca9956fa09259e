"""Profiles: per-dataset budgets and method lists, and what the default plan holds because of them."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
import torch

from bench.core.budgets import Architecture, DatasetSettings, Profile, TrainBudget
from bench.core.errors import BenchError
from bench.data.bundle import DATASETS, DatasetLoaderOptions
from bench.metrics import METRICS
from bench.plan.planner import Selection, make_plan
from bench.plan.profiles import CONCEPT_SHAPES_DEFAULT_METHODS, DEFAULT_METHODS, PROFILES
from bench.report.claims import CLAIMS
from bench.train.loop import TrainContext, cross_entropy_step, seed_everything
from bench.train.method import METHODS

DEFAULT = PROFILES.get("default")


def test_dataset_settings_apply_by_name_then_family_then_modality():
    own = replace(DEFAULT.budgets["image"], student=Architecture("small_cnn", (("depth", 3),)))
    profile = Profile(
        name="probe",
        description="",
        datasets=(),
        seeds=(0,),
        budgets=DEFAULT.budgets,
        methods=("scratch", "kd"),
        per_dataset={
            "fashion_mnist": DatasetSettings(budget=own),
            "fashion_mnist:500": DatasetSettings(methods=("scratch",)),
        },
    )
    assert profile.budget("fashion_mnist", "image") is own
    # A family member without settings of its own takes its family's.
    assert profile.budget("fashion_mnist:2000", "image") is own
    assert profile.methods_for("fashion_mnist:2000") == ("scratch", "kd")
    # Its own entry wins, field by field: methods from it, budget from the modality.
    assert profile.methods_for("fashion_mnist:500") == ("scratch",)
    assert profile.budget("fashion_mnist:500", "image") is DEFAULT.budgets["image"]
    assert profile.budget("digits", "image") is DEFAULT.budgets["image"]
    assert profile.methods_for("digits") == ("scratch", "kd")


def test_default_plan_gives_concept_shapes_its_own_network_and_methods():
    plan = make_plan(Selection(profile="default"))
    by_dataset: dict[str, set[str]] = {}
    for run in plan.runs:
        by_dataset.setdefault(run.dataset, set()).add(run.method)
    assert set(by_dataset) == {"breast_cancer", "wine", "digits", "concept_shapes"}
    assert by_dataset["concept_shapes"] == set(CONCEPT_SHAPES_DEFAULT_METHODS)
    image_methods = {m for m in DEFAULT_METHODS if "image" in METHODS.get(m).modalities}
    assert by_dataset["digits"] == image_methods
    tabular_methods = {m for m in DEFAULT_METHODS if "tabular" in METHODS.get(m).modalities}
    assert by_dataset["wine"] == tabular_methods
    shapes = next(run for run in plan.runs if run.dataset == "concept_shapes")
    digits = next(run for run in plan.runs if run.dataset == "digits")
    assert shapes.budget.student.kwargs()["depth"] == 4
    assert digits.budget.student.kwargs()["depth"] == 2
    teachers = {(t.dataset, t.seed): t for t in plan.teachers}
    assert teachers["concept_shapes", 0].key != teachers["digits", 0].key
    assert teachers["concept_shapes", 0].settings["training"]["epochs"] == 40
    # Fashion-MNIST is not in the suite, but a run of it gets the 4-block network too.
    assert DEFAULT.budget("fashion_mnist:2000", "image") is shapes.budget


def test_method_selection_overrides_a_dataset_method_list():
    plan = make_plan(
        Selection(profile="default", datasets=("concept_shapes",), methods=("fitnet", "at"))
    )
    assert {run.method for run in plan.runs} == {"fitnet", "at"}
    assert len(plan.runs) == 2 * len(DEFAULT.seeds)
    with pytest.raises(BenchError, match="fitnet"):
        make_plan(
            Selection(profile="default", datasets=("concept_shapes",), overrides=("fitnet.beta=1",))
        )


def test_full_profile_sizes_images_for_a_gpu_and_keeps_small_ones_small():
    full = PROFILES.get("full")
    image = full.budget("cifar10", "image")
    assert image.teacher_network == Architecture("resnet", (("width", 32), ("blocks", 3)))
    assert image.teacher_training.mixed_precision and image.student_training.mixed_precision
    assert full.budget("fashion_mnist:2000", "image") is image
    assert full.budget("digits", "image") == DEFAULT.budget("digits", "image")
    assert full.budget("concept_shapes", "image") == DEFAULT.budget("concept_shapes", "image")
    assert full.methods_for("concept_shapes") is None  # every method


def train_digits(mixed: bool, device: torch.device) -> tuple[TrainContext, list[torch.Tensor]]:
    bundle = DATASETS.get("digits").load(DatasetLoaderOptions())
    budget = TrainBudget(epochs=2, batch_size=64, lr=1e-2, mixed_precision=mixed)
    architecture = Architecture("small_cnn", (("width", 4), ("depth", 2)))
    ctx = TrainContext(bundle, None, budget, architecture, device, seed=0)
    seed_everything(0)
    model = ctx.default_student().to(device)
    ctx.fit(model, cross_entropy_step(model))
    return ctx, [p.detach().cpu() for p in model.parameters()]


def test_mixed_precision_changes_nothing_on_the_cpu():
    plain_ctx, plain = train_digits(False, torch.device("cpu"))
    mixed_ctx, mixed = train_digits(True, torch.device("cpu"))
    assert not mixed_ctx.uses_mixed_precision
    assert all(torch.equal(a, b) for a, b in zip(plain, mixed, strict=True))
    assert plain_ctx.history == mixed_ctx.history


@pytest.mark.cuda
def test_mixed_precision_trains_on_a_gpu():
    ctx, _ = train_digits(True, torch.device("cuda"))
    assert ctx.uses_mixed_precision
    assert ctx.history["val_accuracy"][-1] > 0.5


def claim_pairs_measured_on(dataset: str) -> set[str]:
    """The methods and baselines of every claim's primary test that the default suite can make on
    `dataset`: both run there, and the metric is measured there (the dissection metrics only on
    a dataset with a concept probe)."""
    entry = DATASETS.get(dataset)
    has_probe = "concept_probe" in entry.load(DatasetLoaderOptions()).extras
    runs = {
        name
        for name in DEFAULT.methods_for(dataset) or ()
        if entry.modality in METHODS.get(name).modalities
    }
    methods: set[str] = set()
    for claim in CLAIMS:
        for test in claim.tests:
            needs_probe = METRICS.get(test.metric).category == "dissection"
            if {test.method, test.baseline} <= runs and (has_probe or not needs_probe):
                methods |= {test.method, test.baseline}
    return methods


@pytest.mark.parametrize("dataset", DEFAULT.datasets)
def test_default_gives_exactly_the_claims_comparisons_ten_seeds_over_three_teachers(dataset):
    """Every comparison of a claim (primary, the paper's or secondary) gets ≥ 10 paired student
    seeds over ≥ 3 teacher seeds on every default dataset that tests it; methods that no claim
    compares there keep three."""
    plan = make_plan(Selection(profile="default", datasets=(dataset,)))
    claimed = claim_pairs_measured_on(dataset)
    assert claimed  # every default dataset tests some claim
    for method in {run.method for run in plan.runs}:
        runs = [run for run in plan.runs if run.method == method]
        seeds = {run.seed for run in runs}
        if method in claimed:
            assert len(seeds) >= 10, method
            assert len({run.teacher.seed for run in runs}) >= 3, method
        else:
            assert seeds == set(DEFAULT.seeds), method
    # Pairs share their seeds and, seed by seed, their teacher.
    for test in (t for claim in CLAIMS for t in claim.tests):
        if {test.method, test.baseline} <= claimed:
            pairs = [
                {(r.seed, r.teacher.key) for r in plan.runs if r.method == name}
                for name in (test.method, test.baseline)
            ]
            assert pairs[0] == pairs[1]


def test_a_seed_selection_applies_to_every_method():
    plan = make_plan(Selection(profile="default", datasets=("wine",), seeds=(4, 5)))
    assert {run.seed for run in plan.runs} == {4, 5}
    assert {run.method for run in plan.runs} >= {"scratch", "kd"}


def test_every_teacher_teaches_as_many_students() -> None:
    default = PROFILES.get("default")
    for seeds in (default.seeds, default.claim_seeds):
        per_teacher = Counter(default.teacher_seed_for(seed) for seed in seeds)
        assert len(set(per_teacher.values())) == 1
    with pytest.raises(ValueError, match="every teacher needs the same number"):
        replace(default, claim_seeds=tuple(range(10)))


def test_the_reference_rows_are_redone_when_the_other_teachers_seed_moves() -> None:
    """The `other_teacher` level is the teacher of the first seed after the profile's teachers;
    a profile with one more teacher seed keeps teacher 0 (its students' run ids) but not teacher
    0's reference rows, which were scored beside another `other_teacher`."""
    more = replace(DEFAULT, name="more_teachers", teacher_seeds=(0, 1, 2, 3), seeds=(0, 1, 2, 3),
                   claim_seeds=tuple(range(12)))  # fmt: skip
    assert (DEFAULT.other_teacher_seed, more.other_teacher_seed) == (3, 4)
    PROFILES.register(more.name)(more)  # the registries are restored after each test
    ours, theirs = (
        make_plan(Selection(profile=p.name, datasets=("wine",), methods=("kd",), seeds=(0,)))
        for p in (DEFAULT, more)
    )
    assert ours.runs[0].run_id == theirs.runs[0].run_id
    key = ours.runs[0].teacher.key
    assert key == theirs.runs[0].teacher.key
    assert ours.reference_ids[key] != theirs.reference_ids[key]
