"""The CIFAR-100 recipe's training settings: SGD and its step schedule, crop-and-flip augmentation
on the device, channels-last layout, the last epoch's test accuracy, and run ids that do not move
for budgets that leave those settings alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core.budgets import Architecture, TrainBudget
from bench.core.errors import BenchError
from bench.core.specs import TeacherSpec
from bench.data.augment import black_fill, crop_and_flip
from bench.data.bundle import DATASETS, DatasetBundle, DatasetLoaderOptions, Split
from bench.models import build_model
from bench.plan.planner import Selection, make_plan
from bench.plan.profiles import PROFILES, STANDARD_PAIRS, cifar100_profile_name, cifar100_recipe
from bench.results.folder import ResultsFolder
from bench.train.feature_losses import TeacherPerImage, teacher_grad_cam
from bench.train.loop import TrainContext, cross_entropy_step, seed_everything, top1_accuracy
from bench.train.method import METHODS, Batch
from bench.train.teachers import NetworkTeacher, Teacher, obtain_teacher

CPU = torch.device("cpu")
REPOSITORY = Path(__file__).resolve().parents[1]
TINY_STUDENT = Architecture("small_cnn", (("width", 4), ("depth", 2)))

pytestmark = pytest.mark.usefixtures("one_thread")


# --- crop and flip ----------------------------------------------------------------------------


def reference_crop_and_flip(
    x: torch.Tensor, padding: int, generator: torch.Generator, fill: torch.Tensor
) -> torch.Tensor:
    """One image at a time, as torchvision's RandomCrop(padding) + RandomHorizontalFlip would
    transform it given the same draws (offsets first, then flips)."""
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = []
    for image, (top, left), flip in zip(x, offsets.tolist(), flips.tolist(), strict=True):
        padded = fill.view(c, 1, 1).expand(c, h + 2 * padding, w + 2 * padding).clone()
        padded[:, padding : padding + h, padding : padding + w] = image
        crop = padded[:, top : top + h, left : left + w]
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out)


@pytest.mark.parametrize("padding", [1, 4])
def test_crop_and_flip_is_the_per_image_transform(padding: int) -> None:
    x = torch.rand(16, 3, 6, 5)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    ours = crop_and_flip(x, padding, torch.Generator().manual_seed(3), fill)
    theirs = reference_crop_and_flip(x, padding, torch.Generator().manual_seed(3), fill)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert not torch.equal(ours, x)  # 16 images: some were moved or flipped
    # Padding shows as the fill value, channel by channel, and nowhere else.
    for channel, value in enumerate(fill.tolist()):
        assert ((ours[:, channel] == value) == (theirs[:, channel] == value)).all()


def test_crop_and_flip_keeps_a_channels_last_batch_equal() -> None:
    x = torch.rand(8, 3, 8, 8)
    plain = crop_and_flip(x, 2, torch.Generator().manual_seed(0))
    nhwc = crop_and_flip(
        x.contiguous(memory_format=torch.channels_last), 2, torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(plain, nhwc, rtol=0, atol=0)


def test_black_fill_is_black_after_standardisation() -> None:
    assert black_fill({}) is None
    fill = black_fill({"normalisation": {"mean": [0.5, 0.25], "std": [0.25, 0.5]}})
    torch.testing.assert_close(fill, torch.tensor([-2.0, -0.5]))


# --- the budget and its run ids ---------------------------------------------------------------


def test_recipe_settings_are_hashed_only_when_set() -> None:
    plain = TrainBudget(epochs=3, batch_size=8, lr=0.1)
    assert set(plain.as_dict()) == {"epochs", "batch_size", "lr", "weight_decay", "mixed_precision"}
    sgd = TrainBudget(epochs=3, batch_size=8, lr=0.1, optimiser="sgd", lr_milestones=[1, 2])
    assert sgd.as_dict()["optimiser"] == "sgd" and sgd.lr_milestones == (1, 2)
    assert "crop_padding" not in sgd.as_dict() and "momentum" not in sgd.as_dict()


def test_the_default_profiles_plan_keeps_the_run_ids_of_its_reference_records() -> None:
    """A budget's `as_dict` is what run ids hash; one that sets no recipe setting hashes
    exactly the five settings it had before, so finished runs keep their ids (the tables';
    the image budgets have since asked for the channels-last layout, which is hashed)."""
    budget = PROFILES.get("default").budgets["tabular"]
    assert budget.as_dict()["student_training"] == {
        "epochs": 60, "batch_size": 64, "lr": 1e-3, "weight_decay": 1e-4, "mixed_precision": False,
    }  # fmt: skip
    plan = make_plan(Selection(profile="default", datasets=("wine",), methods=("kd",), seeds=(0,)))
    newest = REPOSITORY / "reference" / "default-v8" / "runs" / "default" / "wine" / "kd"
    assert plan.runs[0].run_id == json.loads((newest / "seed0.json").read_text())["run_id"]
    image = PROFILES.get("default").budgets["image"].as_dict()["student_training"]
    assert image["channels_last"] is True


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"optimiser": "rmsprop"}, "optimiser must be one of"),
        ({"autocast_dtype": "float8"}, "autocast_dtype must be one of"),
        ({"lr_milestones": (2, 1)}, "lr_milestones must be increasing"),
        ({"lr_milestones": (5,)}, "within 1..4"),
    ],
)
def test_a_bad_recipe_setting_is_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainBudget(epochs=5, batch_size=8, lr=0.1, **settings)


def test_the_cifar100_profiles_are_the_literatures_recipe_and_pairs() -> None:
    for pair in STANDARD_PAIRS:
        budget = PROFILES.get(cifar100_profile_name(pair)).budget("cifar100", "image")
        assert (budget.teacher_network.model, budget.student.model) == (pair.teacher, pair.student)
        recipe = budget.student_training
        light = pair.student == "shufflenetv1"  # the recipe's lr for light students
        assert (recipe.epochs, recipe.batch_size, recipe.weight_decay) == (240, 64, 5e-4)
        assert recipe.lr == (0.01 if light else 0.05)
        assert (recipe.optimiser, recipe.momentum) == ("sgd", 0.9)
        assert recipe.lr_milestones == (150, 180, 210)
        assert (recipe.lr_decay, recipe.crop_padding) == (0.1, 4)
        assert budget.teacher_training == cifar100_recipe(0.05)
    assert cifar100_profile_name(STANDARD_PAIRS[0]) == "cifar100"
    assert len(STANDARD_PAIRS) == 6 and len(set(map(cifar100_profile_name, STANDARD_PAIRS))) == 6
    plan = make_plan(Selection(profile="cifar100", methods=("kd",), seeds=(0,)))
    assert [(run.dataset, run.teacher.kind) for run in plan.runs] == [("cifar100", "resnet32x4")]


# --- training under the recipe ----------------------------------------------------------------


def random_images(n: int, classes: int, seed: int, shape=(3, 8, 8)) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.random((n, *shape), dtype=np.float32), np.arange(n) % classes)


@pytest.fixture(scope="module")
def bundle() -> DatasetBundle:
    train, val = random_images(48, 3, 0), random_images(12, 3, 1)
    return DatasetBundle(
        "random", "0", "image", train, val, random_images(15, 3, 2), ("a", "b", "c")
    )


@pytest.fixture(scope="module")
def teacher(bundle: DatasetBundle, tmp_path_factory: pytest.TempPathFactory) -> Teacher:
    torch.manual_seed(0)
    module = build_model("resnet", bundle.input_shape, 3, width=4, blocks=1)
    spec = TeacherSpec("random", "0", "image", "resnet", {})
    return NetworkTeacher(module, spec, bundle, CPU, {}, tmp_path_factory.mktemp("teacher"))


def recipe(**settings) -> TrainBudget:
    base = {"epochs": 2, "batch_size": 16, "lr": 0.05, "weight_decay": 5e-4, "optimiser": "sgd",
            "lr_milestones": (1,), "crop_padding": 2, "channels_last": True}  # fmt: skip
    return TrainBudget(**{**base, **settings})


def test_the_step_schedule_changes_the_learning_rate_at_its_milestones(
    bundle: DatasetBundle,
) -> None:
    """One batch of the whole split, no augmentation: a model that no longer learns (lr × 0
    after epoch 1) has the same training loss in epochs 1 and 2; one whose lr is kept does not."""
    losses = {}
    for decay in (0.0, 1.0):
        budget = recipe(epochs=3, batch_size=48, crop_padding=0, lr_decay=decay)
        ctx = TrainContext(bundle, None, budget, TINY_STUDENT, CPU, seed=0)
        seed_everything(0)
        model = ctx.default_student()
        ctx.fit(model, cross_entropy_step(model))
        losses[decay] = ctx.history["loss/ce"]
    # Each epoch draws its own order of the one batch, so the mean loss of unchanged weights is
    # summed in another order: equal to float32 rounding, not bitwise (on some CPUs' kernels).
    assert losses[0.0][2] == pytest.approx(losses[0.0][1], rel=1e-6)
    assert abs(losses[1.0][2] - losses[1.0][1]) > 1e-4 * losses[1.0][1]
    assert losses[0.0][:2] == losses[1.0][:2]  # identical until the milestone


def test_sgd_with_momentum_or_adam_as_the_budget_says(bundle: DatasetBundle) -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = TrainContext(bundle, None, recipe(momentum=0.8), TINY_STUDENT, CPU, 0).make_optimiser(
        params
    )
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8
    assert sgd.defaults["weight_decay"] == 5e-4
    adam = TrainContext(bundle, None, TrainBudget(1, 8, 1e-3), TINY_STUDENT, CPU, 0).make_optimiser(
        params
    )
    assert isinstance(adam, torch.optim.Adam)


@pytest.mark.parametrize("channels_last", [False, True])
def test_augmented_batches_are_cropped_and_flipped_in_the_budgets_layout_on_a_cpu(
    bundle: DatasetBundle, channels_last: bool
) -> None:
    ctx = TrainContext(bundle, None, recipe(channels_last=channels_last), TINY_STUDENT, CPU, seed=0)
    assert ctx.uses_channels_last == channels_last
    batches = list(ctx.batches())
    assert all(b.augmented for b in batches)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert all(b.x.is_contiguous(memory_format=layout) for b in batches)
    changed = [not torch.equal(b.x, ctx.x_train[b.index]) for b in batches]
    assert all(changed)
    plain = TrainContext(bundle, None, recipe(crop_padding=0), TINY_STUDENT, CPU, seed=0)
    assert not any(b.augmented for b in plain.batches())


def test_a_network_teacher_sees_the_augmented_images(
    bundle: DatasetBundle, teacher: Teacher
) -> None:
    ctx = TrainContext(bundle, teacher, recipe(), TINY_STUDENT, CPU, seed=0)
    batch = next(ctx.batches())
    out = teacher.outputs(batch, ["layer3"])
    with torch.no_grad():
        live = teacher.module(batch.x)
    torch.testing.assert_close(out.logits, live)
    assert not torch.allclose(out.logits, teacher.train_logits[batch.index])
    assert out.features["layer3"].shape[0] == len(batch.y)


def test_per_image_teacher_values_follow_the_augmented_images(
    bundle: DatasetBundle, teacher: Teacher
) -> None:
    plain_ctx = TrainContext(bundle, teacher, recipe(crop_padding=0), TINY_STUDENT, CPU, seed=0)
    plain = TeacherPerImage(plain_ctx, teacher_grad_cam)
    assert plain.table is not None
    batch = next(plain_ctx.batches())
    looked_up = plain(batch, teacher.outputs(batch, []))
    predicted = teacher.train_logits[batch.index].argmax(1)
    torch.testing.assert_close(looked_up, teacher_grad_cam(teacher.module, batch.x, predicted))

    ctx = TrainContext(bundle, teacher, recipe(), TINY_STUDENT, CPU, seed=0)
    live = TeacherPerImage(ctx, teacher_grad_cam)
    assert live.table is None  # nothing computed for images the loop will never show
    batch = next(ctx.batches())
    out = teacher.outputs(batch, [])
    expected = teacher_grad_cam(teacher.module, batch.x, out.logits.argmax(1))
    torch.testing.assert_close(live(batch, out), expected)


def test_a_tree_teacher_refuses_augmented_batches_and_tables_refuse_augmentation(
    tmp_path: Path,
) -> None:
    table = DATASETS.get("wine").load(DatasetLoaderOptions())
    with pytest.raises(BenchError, match="augmentation needs images, not tabular data"):
        TrainContext(table, None, recipe(), Architecture("mlp"), CPU, seed=0)
    spec = make_plan(Selection(profile="smoke", datasets=("wine",), methods=("kd",))).teachers[0]
    tree = obtain_teacher(spec, table, ResultsFolder(tmp_path).teacher_folder(spec), CPU)
    batch = Batch(torch.zeros(2, 13), torch.zeros(2, dtype=torch.long), torch.arange(2), True)
    with pytest.raises(ValueError, match="cannot see augmented images"):
        tree.outputs(batch, [])


IMAGE_METHODS = [name for name in METHODS.names() if "image" in METHODS.get(name).modalities]


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_every_image_method_trains_under_the_recipe(
    bundle: DatasetBundle, teacher: Teacher, name: str
) -> None:
    """SGD, a milestone and crop-and-flip: the teacher's outputs (and per-image maps) are
    computed live on the augmented images. (Channels-last, CUDA only, in the GPU tests.)"""
    seed_everything(0)
    ctx = TrainContext(bundle, teacher, recipe(), TINY_STUDENT, CPU, seed=0)
    student = METHODS.get(name)().fit(ctx)
    terms = [v for key, values in ctx.history.items() if key.startswith("loss/") for v in values]
    assert terms and all(math.isfinite(v) for v in terms)
    assert 0.0 <= ctx.last_epoch_test_accuracy <= 1.0
    with torch.no_grad():
        assert torch.isfinite(student(torch.as_tensor(bundle.test.x))).all()


def test_training_under_the_recipe_is_deterministic_and_keeps_the_last_epochs_accuracy(
    bundle: DatasetBundle, teacher: Teacher
) -> None:
    states, accuracies = [], []
    for _ in range(2):
        seed_everything(0)
        ctx = TrainContext(
            bundle, teacher, recipe(epochs=1, lr_milestones=()), TINY_STUDENT, CPU, 0
        )
        student = METHODS.get("kd")().fit(ctx)
        states.append(student.state_dict())
        accuracies.append(ctx.last_epoch_test_accuracy)
        # One epoch: the last epoch is the selected one.
        x, y = torch.as_tensor(bundle.test.x), torch.as_tensor(bundle.test.y)
        assert ctx.last_epoch_test_accuracy == top1_accuracy(student, x, y)
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key
    assert accuracies[0] == accuracies[1]


# --- on a GPU (`-m cuda`; skipped without one) --------------------------------------------------

CUDA = torch.device("cuda")


def gpu_recipe(**settings) -> TrainBudget:
    """The recipe as the cifar100 profiles run it on a GPU: bfloat16 autocast, channels-last."""
    return recipe(mixed_precision=True, autocast_dtype="bfloat16", **settings)


@pytest.fixture(scope="module")
def gpu_teacher(bundle: DatasetBundle, tmp_path_factory: pytest.TempPathFactory) -> Teacher:
    torch.manual_seed(0)
    module = build_model("resnet", bundle.input_shape, 3, width=4, blocks=1).to(CUDA)
    spec = TeacherSpec("random", "0", "image", "resnet", {})
    return NetworkTeacher(module, spec, bundle, CUDA, {}, tmp_path_factory.mktemp("gpu-teacher"))


@pytest.mark.cuda
def test_on_a_gpu_batches_teacher_and_student_train_channels_last_and_return_plain(
    bundle: DatasetBundle, gpu_teacher: Teacher
) -> None:
    ctx = TrainContext(bundle, gpu_teacher, gpu_recipe(), TINY_STUDENT, CUDA, seed=0)
    assert ctx.uses_channels_last
    assert all(b.x.is_contiguous(memory_format=torch.channels_last) for b in ctx.batches())
    assert gpu_teacher.module.layer1[0].conv1.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    student = METHODS.get("kd")().fit(ctx)
    # Returned in the layout a model loaded from the cache has.
    assert all(p.is_contiguous() for p in student.parameters())


@pytest.mark.cuda
def test_crop_and_flip_on_the_gpu_is_the_cpus() -> None:
    x = torch.rand(32, 3, 8, 8)
    fill = torch.tensor([-1.0, 0.5, 2.0])
    on_cpu = crop_and_flip(x, 4, torch.Generator().manual_seed(1), fill)
    on_gpu = crop_and_flip(x.to(CUDA), 4, torch.Generator().manual_seed(1), fill)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_every_image_method_trains_under_the_recipe_in_bfloat16(
    bundle: DatasetBundle, gpu_teacher: Teacher, name: str
) -> None:
    seed_everything(0)
    ctx = TrainContext(bundle, gpu_teacher, gpu_recipe(), TINY_STUDENT, CUDA, seed=0)
    assert ctx.uses_mixed_precision
    METHODS.get(name)().fit(ctx)
    terms = [v for key, values in ctx.history.items() if key.startswith("loss/") for v in values]
    assert terms and all(math.isfinite(v) for v in terms)


@pytest.mark.cuda
def test_a_compiled_student_trains_like_an_eager_one(
    bundle: DatasetBundle, gpu_teacher: Teacher
) -> None:
    """`TrainBudget.compile`: the same losses as eager execution, up to float32 kernel order."""
    histories = []
    for compiled in (False, True):
        seed_everything(0)
        budget = recipe(epochs=2, compile=compiled)
        ctx = TrainContext(bundle, gpu_teacher, budget, TINY_STUDENT, CUDA, seed=0)
        student = METHODS.get("kd")().fit(ctx)
        histories.append(ctx.history["loss/kd"])
        assert student._compiled_call_impl is None  # scored eagerly
    assert histories[1] == pytest.approx(histories[0], rel=1e-3)
