"""Image distillation methods (fitnet, at, dkd, e2kd, xdistill) and the pieces they share.

Loss terms are checked against values worked out by hand on tiny tensors; each method is then run
through the real harness on `digits` in the smoke profile.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import nn

from bench.core.budgets import Architecture, TrainBudget
from bench.core.errors import BenchError
from bench.core.specs import TeacherSpec
from bench.data.bundle import DATASETS, DatasetBundle, DatasetLoaderOptions, Split
from bench.explain.explainers import ExplainSettings, explain
from bench.explain.gradcam import grad_cam, grad_cam_maps
from bench.methods.dkd import decoupled_kd
from bench.methods.e2kd import explanation_loss
from bench.methods.fitnet import HintRegressor, hint_loss, pick_stage
from bench.methods.xdistill import FusedStudent, strip_classifier
from bench.models import build_model, count_parameters
from bench.plan.planner import Selection, make_plan
from bench.plan.profiles import PROFILES
from bench.report.claims import PARAMETER_TOLERANCE
from bench.results.folder import ResultsFolder
from bench.train.feature_losses import (
    attention_map,
    attention_transfer_loss,
    last_conv_layer,
    paired_stages,
)
from bench.train.loop import TrainContext, seed_everything
from bench.train.losses import kd_kl
from bench.train.method import METHODS, Batch, ModelOutput
from bench.train.teachers import NetworkTeacher, Teacher, obtain_teacher

VISION_METHODS = ("fitnet", "at", "dkd", "e2kd", "xdistill", "xdistill_arch", "kd_matched")
CPU = torch.device("cpu")
SMOKE_IMAGE = PROFILES.get("smoke").budgets["image"]


# The tensors here are tiny: on a shared machine a second intra-op thread only spins.
pytestmark = pytest.mark.usefixtures("one_thread")


# --- shared pieces, by hand ---------------------------------------------------------------


def test_attention_map_is_normalised_channel_sum_of_squares() -> None:
    features = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 2.0], [0.0, 0.0]]]])
    # Σ_c a_c² = [[1, 4], [0, 1]], flattened and divided by its norm √18.
    expected = torch.tensor([[1.0, 4.0, 0.0, 1.0]]) / math.sqrt(18.0)
    torch.testing.assert_close(attention_map(features), expected)


def test_attention_map_pools_a_finer_map_to_the_requested_size() -> None:
    features = torch.arange(16.0).view(1, 1, 4, 4)
    squares = [[(4 * i + j) ** 2 for j in range(4)] for i in range(4)]
    cells = [
        sum(squares[2 * bi + di][2 * bj + dj] for di in (0, 1) for dj in (0, 1)) / 4
        for bi in (0, 1)
        for bj in (0, 1)
    ]
    norm = math.sqrt(sum(c * c for c in cells))
    expected = torch.tensor([[c / norm for c in cells]])
    torch.testing.assert_close(attention_map(features, (2, 2)), expected)


def test_attention_transfer_loss_by_hand_and_invariant_to_scale() -> None:
    student = torch.zeros(1, 1, 2, 2)
    student[0, 0, 0, 0] = 3.0
    teacher = torch.zeros(1, 4, 2, 2)
    teacher[0, 2, 0, 1] = 0.5
    # Unit maps [1, 0, 0, 0] and [0, 1, 0, 0]: squared differences 1 + 1 over four cells.
    assert attention_transfer_loss(student, teacher).item() == pytest.approx(0.5)
    assert attention_transfer_loss(teacher, 7 * teacher).item() == pytest.approx(0.0, abs=1e-12)
    # A 4x4 student is compared with a 2x2 teacher on the teacher's grid: one energetic cell
    # per 2x2 block in the student pools to a uniform map, as is the teacher's.
    fine = torch.zeros(1, 1, 4, 4)
    fine[0, 0, ::2, ::2] = 1.0
    assert attention_transfer_loss(fine, torch.ones(1, 3, 2, 2)).item() == pytest.approx(0.0)


class TinyConvNet(nn.Module):
    """conv → ReLU (`act`) → global average pool → linear: Grad-CAM has a closed form here."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=2)
        self.act = nn.ReLU()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.act(self.conv(x))))


def test_grad_cam_of_a_tiny_conv_model_matches_the_closed_form_and_captum() -> None:
    torch.manual_seed(0)
    model = TinyConvNet()
    x = torch.randn(4, 1, 4, 4)
    target = torch.tensor([0, 1, 2, 1])
    maps = grad_cam_maps(model, "act", x, target, batch_size=3)  # two chunks
    # ∂y_c/∂A_k is W[c, k]/(H·W) everywhere, so Grad-CAM = ReLU(Σ_k W[c, k]/(H·W) · A_k).
    with torch.no_grad():
        activation = model.act(model.conv(x))
        weights = model.head.weight[target] / 9.0
        manual = F.relu((weights[:, :, None, None] * activation).sum(1))
    torch.testing.assert_close(maps, manual)
    captum = LayerGradCam(model, model.act).attribute(x, target=target, relu_attributions=True)
    torch.testing.assert_close(maps, captum[:, 0].detach())


def test_differentiable_grad_cam_trains_the_classifier_weights() -> None:
    torch.manual_seed(1)
    model = TinyConvNet()
    x = torch.randn(2, 1, 4, 4)
    activation = model.act(model.conv(x))
    logits = model.head(model.pool(activation))
    target = torch.tensor([2, 0])
    maps = grad_cam(activation, logits.gather(1, target[:, None]).squeeze(1), create_graph=True)
    maps.sum().backward()
    # d Σ map / d W[c, k] = Σ over the map's positive cells of A_k / (H·W), per explained sample.
    expected = torch.zeros_like(model.head.weight)
    with torch.no_grad():
        for i, c in enumerate(target.tolist()):
            positive = maps[i] > 0
            expected[c] += (activation[i][:, positive]).sum(1) / 9.0
    torch.testing.assert_close(model.head.weight.grad, expected)


def test_explanation_loss_is_one_minus_cosine() -> None:
    a = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    b = torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])
    # Orthogonal maps lose 1; the second pair has cosine 1/√2.
    expected = ((1 - 0.0) + (1 - 1 / math.sqrt(2))) / 2
    assert explanation_loss(a, b).item() == pytest.approx(expected)
    assert explanation_loss(a, 2 * a).item() == pytest.approx(0.0, abs=1e-6)


# --- DKD -----------------------------------------------------------------------------------


def test_tckd_and_nckd_by_hand() -> None:
    student = torch.zeros(1, 3)  # p = 1/3 each: b_S = [1/3, 2/3], p̂_S = [1/2, 1/2]
    teacher = torch.tensor([[math.log(2.0), 0.0, 0.0]])  # p = [1/2, 1/4, 1/4]: b_T = [1/2, 1/2]
    tckd, nckd = decoupled_kd(student, teacher, torch.tensor([0]), temperature=1.0)
    assert tckd.item() == pytest.approx(0.5 * math.log(1.5) + 0.5 * math.log(0.75))
    assert nckd.item() == pytest.approx(0.0, abs=1e-7)
    tckd2, _ = decoupled_kd(student * 2, teacher * 2, torch.tensor([0]), temperature=2.0)
    assert tckd2.item() == pytest.approx(4 * tckd.item())  # the T² factor


def test_dkd_terms_recombine_into_classic_kd() -> None:
    student = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -2.0, 1.5], [-1.0, 0.0, 1.0, 3.0]])
    teacher = torch.tensor([[3.0, 0.5, -0.5, 0.0], [-1.0, 2.5, 0.0, 1.0], [0.0, 0.0, 2.0, 2.5]])
    target = torch.tensor([0, 1, 3])
    for temperature in (1.0, 4.0):
        tckd, nckd = decoupled_kd(student, teacher, target, temperature)
        p_target = F.softmax(teacher / temperature, dim=1).gather(1, target[:, None]).squeeze(1)
        # The paper's Eq. 4: KD = TCKD + (1 − p_t^T) · NCKD.
        recombined = (tckd + (1 - p_target) * nckd).mean()
        torch.testing.assert_close(recombined, kd_kl(student, teacher, temperature))


@pytest.fixture(scope="module")
def digits() -> DatasetBundle:
    return DATASETS.get("digits").load(DatasetLoaderOptions())


def test_dkd_warmup_ramps_the_kd_terms(digits: DatasetBundle) -> None:
    ctx = TrainContext(digits, None, TrainBudget(12, 64, 1e-3), SMOKE_IMAGE.student, CPU, seed=0)
    method = METHODS.get("dkd")({"warmup_fraction": 2 / 12})  # two warm-up epochs
    batch = Batch(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), torch.tensor([0, 1]))
    student, teacher = ModelOutput(torch.randn(2, 10)), ModelOutput(torch.randn(2, 10))
    ctx.epoch = 0
    first = method.loss(batch, student, teacher, ctx)
    ctx.epoch = 5
    later = method.loss(batch, student, teacher, ctx)
    assert first["tckd"].item() == pytest.approx(0.5 * later["tckd"].item())
    assert first["nckd"].item() == pytest.approx(0.5 * later["nckd"].item())
    assert first["ce"].item() == pytest.approx(later["ce"].item())


# --- FitNets and layer choice --------------------------------------------------------------


def test_hint_loss_of_a_known_regressor() -> None:
    regressor = HintRegressor(2, 1, (1, 1))
    with torch.no_grad():
        regressor.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))
        regressor.conv.bias.zero_()
    guided = torch.empty(2, 2, 2, 2)
    guided[0, 0], guided[0, 1] = 3.0, 1.0  # pooled [3, 1] → 3 − 1 = 2
    guided[1, 0], guided[1, 1] = 1.0, 3.0  # pooled [1, 3] → −2, clipped to 0 by the ReLU
    hint = torch.full((2, 1, 1, 1), 5.0)
    # ½ (5 − 2)² = 4.5 and ½ (5 − 0)² = 12.5, averaged.
    assert hint_loss(regressor, guided, hint).item() == pytest.approx(8.5)


@pytest.mark.parametrize(
    ("depth", "middle", "last"),
    [
        (1, "block1", "block1"),
        (2, "block2", "block2"),
        (3, "block2", "block3"),
        (4, "block3", "block4"),
    ],
)
def test_hint_layers_follow_the_student_depth(depth: int, middle: str, last: str) -> None:
    student = build_model("small_cnn", (1, 8, 8), 10, width=4, depth=depth)
    assert pick_stage(student, "middle") == middle
    assert pick_stage(student, "last") == last
    teacher = build_model("resnet", (1, 8, 8), 10, width=4, blocks=2)
    assert pick_stage(teacher, "middle") == "layer2"
    assert pick_stage(teacher, "last") == "layer3"


def test_a_hint_position_outside_the_choices_is_refused() -> None:
    with pytest.raises(BenchError, match="fitnet.hint='first': valid values are middle, last"):
        METHODS.get("fitnet")({"hint": "first"})


def test_attention_pairs_count_from_the_output_end() -> None:
    teacher = build_model("resnet", (1, 8, 8), 10, width=4, blocks=1)
    shallow = build_model("small_cnn", (1, 8, 8), 10, width=4, depth=2)
    assert paired_stages(shallow, teacher) == [("block1", "layer2"), ("block2", "layer3")]
    deep = build_model("small_cnn", (1, 8, 8), 10, width=4, depth=3)
    assert paired_stages(deep, teacher) == [
        ("block1", "layer1"),
        ("block2", "layer2"),
        ("block3", "layer3"),
    ]


def test_strip_classifier_names_what_it_needs() -> None:
    with pytest.raises(BenchError, match="pool"):
        strip_classifier(nn.Sequential(nn.Conv2d(1, 2, 3)))


# --- training with the shared loop ----------------------------------------------------------


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory, digits: DatasetBundle) -> Teacher:
    """The smoke profile's digits teacher, trained once into a temporary results folder."""
    plan = make_plan(Selection(profile="smoke", datasets=("digits",), methods=VISION_METHODS))
    assert {run.method for run in plan.runs} == set(VISION_METHODS)  # all planned for images
    results = tmp_path_factory.mktemp("vision")
    return obtain_teacher(
        plan.teachers[0], digits, ResultsFolder(results).teacher_folder(plan.teachers[0]), CPU
    )


@pytest.mark.parametrize("name", VISION_METHODS)
def test_method_declares_image_modality_citation_and_defaults(name: str) -> None:
    cls = METHODS.get(name)
    assert cls.modalities == frozenset({"image"})
    assert cls.citation and cls.defaults and cls.describe()


@pytest.mark.parametrize("name", VISION_METHODS)
def test_method_trains_on_digits_and_its_loss_decreases(
    digits: DatasetBundle, teacher: Teacher, name: str
) -> None:
    """The smoke profile's student budget, through `Method.fit` and the shared loop."""
    seed_everything(0)
    ctx = TrainContext(
        digits, teacher, SMOKE_IMAGE.student_training, SMOKE_IMAGE.student, CPU, seed=0
    )
    student = METHODS.get(name)().fit(ctx)
    terms = {key: values for key, values in ctx.history.items() if key.startswith("loss/")}
    assert len(terms) >= 2  # the label term and the method's own
    totals = [sum(step) for step in zip(*terms.values(), strict=True)]
    assert len(totals) == SMOKE_IMAGE.student_training.epochs
    assert all(math.isfinite(t) for t in totals)
    assert totals[-1] < totals[0], totals
    logits = student(torch.as_tensor(digits.test.x[:7]))
    assert logits.shape == (7, digits.num_classes) and not student.training


def _context(digits: DatasetBundle, teacher: Teacher) -> TrainContext:
    seed_everything(0)
    budget = TrainBudget(epochs=2, batch_size=128, lr=1e-2)
    return TrainContext(digits, teacher, budget, SMOKE_IMAGE.student, CPU, seed=0)


@pytest.mark.parametrize(("name", "attribute"), [("fitnet", "regressor"), ("xdistill", "decoder")])
def test_trainable_modules_are_optimised_but_not_returned(
    digits: DatasetBundle, teacher: Teacher, name: str, attribute: str
) -> None:
    method = METHODS.get(name)()
    original = method.trainable_modules
    initial: dict[str, torch.Tensor] = {}

    def remember(student: nn.Module, ctx: TrainContext) -> nn.Module:
        extra = original(student, ctx)
        initial.update({k: v.detach().clone() for k, v in extra.state_dict().items()})
        return extra

    method.trainable_modules = remember  # observe the modules as the loop receives them
    student = method.fit(_context(digits, teacher))
    extra = getattr(method, attribute)
    changed = [k for k, v in extra.state_dict().items() if not torch.equal(v, initial[k])]
    assert any(k.endswith("weight") for k in changed)  # the optimiser reached them
    student_params = {id(p) for p in student.parameters()}
    assert not student_params & {id(p) for p in extra.parameters()}
    assert not student.training and not extra.training
    logits = student(torch.as_tensor(digits.test.x[:5]))
    assert logits.shape == (5, digits.num_classes)


def test_xdistill_student_is_one_network_that_grad_cam_can_explain(
    digits: DatasetBundle, teacher: Teacher
) -> None:
    method = METHODS.get("xdistill")()
    student = method.fit(_context(digits, teacher))
    assert isinstance(student, FusedStudent)
    standard = build_model("small_cnn", (1, 8, 8), 10, **SMOKE_IMAGE.student.kwargs())
    # The standard student without its classifier, the encoder and the fused classifier; the
    # decoder, its explainer, is not counted.
    trunk = count_parameters(standard) - count_parameters(standard.head)
    assert count_parameters(student.trunk) == trunk
    parts = trunk + count_parameters(student.encoder) + count_parameters(student.head)
    assert count_parameters(student) == parts
    assert student.head.in_features == standard.head.in_features + method.params["ae_width"]
    x = torch.as_tensor(digits.test.x[:6])
    maps = grad_cam_maps(student, last_conv_layer(student), x, student(x).argmax(1))
    assert maps.shape[0] == 6 and torch.isfinite(maps).all()
    # The teacher's maps it learned to reconstruct are scaled to a maximum of 1 per sample.
    peaks = method.teacher_maps.table.amax(dim=(1, 2))
    assert peaks.max().item() == pytest.approx(1.0)
    assert method.teacher_maps.table.shape[-2:] == (8, 8)


def test_xdistills_own_explainer_is_its_decoder_and_every_other_networks_is_grad_cam(
    digits: DatasetBundle, teacher: Teacher
) -> None:
    """The explainer `own` gives xdistill's decoder maps of its encoder's code (one map per input,
    whatever the class), and Grad-CAM for a network without a decoder (`xdistill_arch`, kd)."""
    method = METHODS.get("xdistill")()
    student = method.fit(_context(digits, teacher))
    x = digits.test.x[:6]
    settings = ExplainSettings(baseline=np.zeros_like(x[0]))
    classes, other = np.zeros(6, dtype=np.int64), np.ones(6, dtype=np.int64)
    own = explain("own", student, x, classes, 10, settings, CPU)
    with torch.no_grad():
        decoded = method.decoder(student.encoder(torch.as_tensor(x)))
    np.testing.assert_allclose(own[:, 0], decoded.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(own, explain("own", student, x, other, 10, settings, CPU))
    assert not np.allclose(own, explain("gradcam", student, x, classes, 10, settings, CPU))
    ablation = METHODS.get("xdistill_arch")().fit(_context(digits, teacher))
    for network in (ablation, teacher.module):
        np.testing.assert_array_equal(
            explain("own", network, x, classes, 10, settings, CPU),
            explain("gradcam", network, x, classes, 10, settings, CPU),
        )


def test_a_trained_module_beside_the_student_is_restored_to_the_students_best_epoch(
    digits: DatasetBundle, teacher: Teacher
) -> None:
    """The decoder xdistill keeps as its explainer must read the code of the weights scored: the
    loop restores it to the epoch whose student it returns, not to its last."""
    method = METHODS.get("xdistill")()
    seed_everything(0)
    budget = TrainBudget(epochs=3, batch_size=128, lr=1e-2)
    ctx = TrainContext(digits, teacher, budget, SMOKE_IMAGE.student, CPU, seed=0)
    after_epoch: list[dict[str, torch.Tensor]] = []
    accuracies = iter([0.5, 0.9, 0.1])  # the best epoch is the second of three

    def validation_accuracy(model: nn.Module) -> float:  # called once after each epoch
        after_epoch.append(copy.deepcopy(method.decoder.state_dict()))
        return next(accuracies)

    ctx.validation_accuracy = validation_accuracy
    method.fit(ctx)
    assert ctx.best_epoch == 1
    restored = method.decoder.state_dict()
    assert all(torch.equal(v, after_epoch[1][k]) for k, v in restored.items())
    assert not all(torch.equal(v, after_epoch[2][k]) for k, v in restored.items())


# --- every image method through the shared loop, on a split that ends in one sample ---------


@pytest.mark.parametrize(("size", "batch", "expected"), [(65, 64, [65]), (129, 64, [64, 65]),
                                                         (130, 64, [64, 64, 2]), (2, 64, [2])])  # fmt: skip
def test_a_last_batch_of_one_sample_joins_the_one_before(
    size: int, batch: int, expected: list[int]
) -> None:
    """Batch norm cannot normalise one sample on a 1x1 map and batch-relation losses have
    nothing to relate; every sample is still seen once per epoch."""
    split = Split(np.zeros((size, 1, 4, 4), dtype=np.float32), np.arange(size) % 2)
    bundle = DatasetBundle("random", "0", "image", split, split, split, ("a", "b"))
    student = Architecture("small_cnn", (("width", 4), ("depth", 1)))
    ctx = TrainContext(bundle, None, TrainBudget(1, batch, 1e-3), student, CPU, seed=0)
    batches = list(ctx.batches())
    assert [len(b.y) for b in batches] == expected
    assert sorted(torch.cat([b.index for b in batches]).tolist()) == list(range(size))


@pytest.fixture(scope="module")
def odd_split_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetBundle, Teacher]:
    """65 training images, so that a batch size of 64 would leave a last batch of one sample,
    and an untrained ResNet teacher (as good as any for the loop's mechanics)."""
    rng = np.random.default_rng(0)
    train = Split(rng.random((65, 1, 8, 8), dtype=np.float32), np.arange(65) % 3)
    val = Split(rng.random((12, 1, 8, 8), dtype=np.float32), np.arange(12) % 3)
    bundle = DatasetBundle("random", "0", "image", train, val, val, ("a", "b", "c"))
    torch.manual_seed(0)
    module = build_model("resnet", (1, 8, 8), 3, width=4, blocks=1)
    spec = TeacherSpec("random", "0", "image", "resnet", {})
    folder = tmp_path_factory.mktemp("teacher")
    return bundle, NetworkTeacher(module, spec, bundle, CPU, {}, folder)


IMAGE_METHODS = [name for name in METHODS.names() if "image" in METHODS.get(name).modalities]


@pytest.mark.parametrize("name", IMAGE_METHODS)
@pytest.mark.parametrize("depth", [2, 3])
def test_every_image_method_trains_on_an_odd_split_to_finite_losses(
    odd_split_teacher: tuple[DatasetBundle, Teacher], name: str, depth: int
) -> None:
    """Two epochs of each registered image method on 8x8 images: depth 3 gives the student a
    2x2 last stage (1x1 pyramid levels, stage pairs of different resolutions)."""
    bundle, teacher = odd_split_teacher
    seed_everything(0)
    student_arch = Architecture("small_cnn", (("width", 4), ("depth", depth)))
    ctx = TrainContext(bundle, teacher, TrainBudget(2, 64, 1e-2), student_arch, CPU, seed=0)
    METHODS.get(name)().fit(ctx)
    terms = {key: values for key, values in ctx.history.items() if key.startswith("loss/")}
    assert terms and all(len(values) == 2 for values in terms.values())
    assert all(math.isfinite(value) for values in terms.values() for value in values)


# --- the ablations XDistillation's claim is judged against ------------------------------------


def test_xdistill_arch_is_xdistill_without_its_explanation_term(
    digits: DatasetBundle, teacher: Teacher
) -> None:
    """Trained like xdistill with γ = 0 (whose decoder learns but feeds nothing back), the same
    seed gives the same network to the last bit: the ablation removes the term and nothing else."""
    ablation = METHODS.get("xdistill_arch")().fit(_context(digits, teacher))
    gamma_zero = METHODS.get("xdistill")({"gamma": 0.0}).fit(_context(digits, teacher))
    assert type(ablation).__name__ == type(gamma_zero).__name__ == "FusedStudent"
    ours, theirs = ablation.state_dict(), gamma_zero.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("profile", ["smoke", "default"])
def test_kd_matched_has_xdistills_parameter_count(
    digits: DatasetBundle, teacher: Teacher, profile: str
) -> None:
    budget = PROFILES.get(profile).budget("digits", "image")
    ctx = TrainContext(digits, teacher, budget.student_training, budget.student, CPU, seed=0)
    fused = count_parameters(METHODS.get("xdistill")().build_student(ctx))
    standard = count_parameters(ctx.default_student())
    matched = count_parameters(METHODS.get("kd_matched")().build_student(ctx))
    assert abs(matched - fused) <= PARAMETER_TOLERANCE * fused < abs(standard - fused)
