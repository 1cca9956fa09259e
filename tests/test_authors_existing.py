"""xdistill, kd_expl and gbdt2nn against restatements of their authors' formulas, in float64.

Each test computes a method's terms the way training does: the real `Method.fit` runs on a real
`TrainContext` until the shared loop would start, the step the method hands to `ctx.fit` is
called on one batch (`inside_fit`), and on the same tensors the objective is restated from our
reading of the authors' code, or of the paper where no code was released (repository, path and
commit above each restatement). They agree to 1e-6 relative over several shapes and weights.

- gbdt2nn: Ke et al. released DeepGBM (motefly/DeepGBM). Compared with it: the stage-1 leaf
  embedding and its MSE on each group's summed leaf outputs, the heads and the normalised
  embeddings stage 2 imitates, the per-group MLPs' features and forward pass, and the stage-2
  objective (1 − r)·task + r·embedding L2 (binary: the code's BCE on a sigmoid; multiclass, which
  the code does not handle, cross-entropy over the classes' raw scores).
- kd_expl: Hinton et al. released no code; the KD term is restated from RepDistiller's
  DistillKL. Huang et al. released no code for explanation imitation and we could not read their
  paper past its abstract, so that term is restated from the project's reading (DESIGN §5),
  computed independently: TreeSHAP straight from LightGBM's `pred_contrib`, the student's
  gradient by an explicit per-sample Jacobian, and the imitation gradient by double backward.
- xdistill: Alharbi et al. released no code and we could not read their paper past its
  abstract; the restatement is the reading in DESIGN §5 (CE + KD + γ·MSE(decoded map, teacher
  Grad-CAM)), with Selvaraju et al.'s Grad-CAM of the teacher computed independently.

What differs on purpose, compared with the departure undone:

- gbdt2nn's embedding L2 is a plain mean over rows, groups and dimensions; DeepGBM's `emb_loss`
  sums over groups × dimensions, each weighted by |Σ_c head weight|, and averages over rows. Ours
  equals theirs with unit weights divided by groups·dim; with their weights it is a strict xfail.
- gbdt2nn's r decays geometrically over the run; DeepGBM multiplies it by 0.9 every 5 epochs,
  floored at 0.3 (strict xfail with the measured gap); the stage-2 terms compare at equal r.
- gbdt2nn's MLPs have no BatchNorm between their layers, DeepGBM's have (strict xfail); its leaf
  embedding has no BatchNorm and dropout (they are removed from the restatement; what the
  normalisation does at inference is compared as BatchNorm in eval mode) and its padded tree
  slots add nothing (DeepGBM's padding slot is a learned row, zero in the restatement).
- gbdt2nn scales each group's stage-1 target to unit variance while fitting; the comparison uses
  targets already of unit variance, where that scale is 1.
- kd_expl weighs CE and KD by α and 1 − α (RepDistiller: γ and α, the same at γ = α); its
  imitation term covers a fixed seeded subset of rows when `imitation_rows` is set, and floors a
  teacher norm at 1e-3 × the batch's mean (our guards: the restatement selects the same rows, and
  the floor, which the restatement lacks, is compared on its own). Ours keeps TreeSHAP in float32,
  so the imitation gradient compares entry by entry at 1e-6 of its tensor's largest entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.budgets import Architecture, TrainBudget
from bench.core.contracts import Contributions
from bench.data.bundle import DatasetBundle, Split
from bench.explain.gradcam import gradcam_layer
from bench.explain.treeshap import tree_contributions
from bench.methods.gbdt2nn import GBDT2NN, LeafEmbeddings, fit_leaf_embeddings, random_groups
from bench.methods.kd_expl import KDWithExplanationImitation
from bench.methods.xdistill import XDistillation
from bench.models import build_model
from bench.train.explanation_losses import IMITATION_SUBSET_SEED, imitation_loss
from bench.train.loop import StepLoss, TrainContext
from bench.train.method import Batch, ModelOutput
from tests.authorkit import RTOL, assert_same

DOUBLE = torch.float64
# Only for entries that are zero in exact arithmetic (dead ReLUs, leaves no row reaches).
ATOL = 1e-12
CPU = torch.device("cpu")
MLP_STUDENT = Architecture("mlp", (("width", 8), ("depth", 2)))

# The tensors here are tiny: on a shared machine a second intra-op thread only spins.
pytestmark = pytest.mark.usefixtures("one_thread")


# --- shared pieces ------------------------------------------------------------------------------


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """For code that makes tensors in the default dtype (`LeafEmbeddings`' one-hot matrix, the
    Grad-CAM layer's probe)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def bundle_of(x: np.ndarray, y: np.ndarray, classes: int, modality: str) -> DatasetBundle:
    """One split used as train, val and test: only the training split is read here."""
    split = Split(x.astype(np.float32), y.astype(np.int64))
    names = tuple(f"class{k}" for k in range(classes))
    return DatasetBundle("random", "0", modality, split, split, split, names)


def context(bundle: DatasetBundle, teacher: Any, student: Architecture) -> TrainContext:
    """A real context; its training inputs (float32 values) are held in float64, as every tensor
    compared here is, so that the methods' baselines and batches are float64 too."""
    ctx = TrainContext(bundle, teacher, TrainBudget(5, 8, 1e-3), student, CPU, 0)
    ctx.x_train = ctx.x_train.to(DOUBLE)
    return ctx


def inside_fit(
    ctx: TrainContext, inspect: Callable[[nn.Module, StepLoss, nn.Module | None], None]
) -> None:
    """Make `ctx.fit` hand the method's model, step and extra modules to `inspect` instead of
    training: the method's `fit` runs as in a real run up to the shared loop, and `inspect` calls
    the step while the method's feature hooks are still attached."""

    def fit(model: nn.Module, step: StepLoss, extra: nn.Module | None = None) -> nn.Module:
        inspect(model, step, extra)
        return model

    ctx.fit = fit  # type: ignore[method-assign]


def trained_grads(loss: torch.Tensor, module: nn.Module) -> tuple[torch.Tensor, ...]:
    """∂loss/∂θ for every trained parameter; zeros where loss does not depend on it."""
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)


def batch_of(ctx: TrainContext, index: torch.Tensor) -> Batch:
    return Batch(ctx.x_train[index], ctx.y_train[index], index)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -torch.log_softmax(logits, dim=1)[torch.arange(len(y)), y].mean()


# HobbitLong/RepDistiller, distiller_zoo/KD.py (DistillKL), commit
# b84f547c5db6a35318d4671d7d5c4de74c822403: KL(p_T ‖ p_S) at temperature T, summed over classes
# and batch, times T², divided by the batch size. Hinton et al. released no code; this is the
# released implementation the project compares its `kd` with (tests/test_authors_feature.py).
def authors_kd(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    log_q = torch.log_softmax(student / t, dim=1)
    log_p = torch.log_softmax(teacher / t, dim=1)
    return t * t * (log_p.exp() * (log_p - log_q)).sum() / len(student)


# --- tabular problems with a small LightGBM teacher ---------------------------------------------


class TreeTeacher:
    """What kd_expl and gbdt2nn read of a LightGBM teacher (`bench.train.teachers.LightGBMTeacher`):
    its booster, its raw-score logits on the training split ([0, s] for two classes; float64
    here) and TreeSHAP, without the cache folder."""

    module = None

    def __init__(self, booster: lgb.Booster, bundle: DatasetBundle) -> None:
        self.booster = booster
        self.num_classes = bundle.num_classes
        raw = np.asarray(booster.predict(bundle.train.x, raw_score=True), dtype=np.float64)
        if raw.ndim == 1:
            raw = np.stack([np.zeros_like(raw), raw], axis=1)
        self.train_logits = torch.as_tensor(raw)

    def contributions(self, x: np.ndarray) -> Contributions:
        return tree_contributions(self.booster, x, self.num_classes)


def tabular_problem(
    classes: int, rounds: int, seed: int, rows: int = 48, features: int = 6
) -> tuple[DatasetBundle, TreeTeacher]:
    """Random rows whose labels depend on a few features, and a small boosted-trees teacher."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    noisy = x[:, :classes] + 0.5 * rng.normal(size=(rows, classes))
    y = (noisy[:, 0] + noisy[:, 1] > 0) if classes == 2 else noisy.argmax(axis=1)
    bundle = bundle_of(x, y, classes, "tabular")
    objective = {"objective": "binary"} if classes == 2 else {"objective": "multiclass"}
    params = {
        **objective,
        "num_class": 1 if classes == 2 else classes,
        "num_leaves": 4,
        "min_data_in_leaf": 3,
        "learning_rate": 0.3,
        "verbose": -1,
        "num_threads": 1,
        "deterministic": True,
        "seed": seed,
    }
    data = lgb.Dataset(bundle.train.x, bundle.train.y)
    return bundle, TreeTeacher(lgb.train(params, data, num_boost_round=rounds), bundle)


# --- kd_expl ------------------------------------------------------------------------------------

# No released code: Huang, Li, Yan, Luo and Li (arXiv:2005.11638) released none, and we could not
# read their paper past its abstract. Restated from the reading the project specifies (DESIGN §5,
# "Explanation imitation"), computed independently of bench.train.explanation_losses:
#   λ · mean over imitated rows of ‖φ_S − φ_T‖² / ‖φ_T‖²,
# φ_T the teacher's TreeSHAP (LightGBM `pred_contrib`) of the row's label class and φ_S the
# student's ∂s_y/∂x ⊙ (x − x̄), x̄ the training mean, both for the class score centred over classes
# s_c = z_c − mean_k z_k (bench.explain.class_scores); φ_S stays differentiable in the student's weights.


def treeshap_of_labels(
    booster: lgb.Booster, x: np.ndarray, y: np.ndarray, classes: int
) -> torch.Tensor:
    contrib = np.asarray(booster.predict(x, pred_contrib=True), dtype=np.float64)
    n, f = x.shape
    if classes == 2:
        # One raw score s, logits [0, s]: centred, class 1 scores s/2 and class 0 −s/2.
        phi = contrib[:, :f] * np.where(y == 1, 0.5, -0.5)[:, None]
    else:
        per_class = contrib.reshape(n, classes, f + 1)[:, :, :f]  # the last column is the bias
        phi = per_class[np.arange(n), y] - per_class.mean(axis=1)
    # The teacher's cache keeps TreeSHAP in float32: rounded alike, both sides read equal values.
    return torch.as_tensor(phi.astype(np.float32), dtype=DOUBLE)


def jacobian_times_offset(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, baseline: torch.Tensor
) -> torch.Tensor:
    """φ_S from the full Jacobian of the logits, one sample at a time (no summed-score trick)."""
    jacobian = torch.autograd.functional.jacobian(model, x, create_graph=True)  # (n, C, n, F)
    rows = torch.arange(len(x))
    own = jacobian[rows, :, rows, :]  # (n, C, F): each sample's own input gradient
    centred = own - own.mean(dim=1, keepdim=True)
    return centred[rows, y] * (x - baseline)


def relative_imitation(phi_student: torch.Tensor, phi_teacher: torch.Tensor) -> torch.Tensor:
    return ((phi_student - phi_teacher).pow(2).sum(1) / phi_teacher.pow(2).sum(1)).mean()


def imitated_rows(n: int, rows: int) -> np.ndarray:
    """Which training rows carry the term: all, or `rows` of them drawn with the fixed seed (our
    bound on the double-backward cost, stated in the kd_expl docstring)."""
    if rows <= 0 or rows >= n:
        return np.ones(n, dtype=bool)
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(IMITATION_SUBSET_SEED).choice(n, size=rows, replace=False)] = True
    return chosen


# (classes, imitation_rows, alpha, temperature, lambda); imitation_rows 0 imitates every row.
KD_EXPL_CASES = [
    (2, 0, 0.5, 4.0, 1.0),
    (2, 20, 0.1, 1.0, 3.0),
    (3, 0, 0.9, 8.0, 0.25),
    (3, 20, 0.5, 4.0, 1.0),
    (3, 0, 0.1, 2.0, 10.0),
]


@pytest.mark.parametrize(("classes", "rows", "alpha", "temperature", "lam"), KD_EXPL_CASES)
def test_kd_expl_terms_and_imitation_gradient_are_the_restated_objective(
    classes: int, rows: int, alpha: float, temperature: float, lam: float
) -> None:
    bundle, teacher = tabular_problem(classes, rounds=4, seed=classes)
    ctx = context(bundle, teacher, MLP_STUDENT)
    index = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(3))[:12]
    params = {"alpha": alpha, "temperature": temperature, "lambda": lam, "imitation_rows": rows}
    seen: dict[str, Any] = {}

    def inspect(model: nn.Module, step: StepLoss, extra: nn.Module | None) -> None:
        seen["student"] = model.to(DOUBLE)
        seen["terms"] = step(batch_of(ctx, index))

    inside_fit(ctx, inspect)
    torch.manual_seed(0)
    KDWithExplanationImitation(params).fit(ctx)
    student, ours = seen["student"], seen["terms"]

    x, y = ctx.x_train[index], ctx.y_train[index]
    keep = imitated_rows(len(bundle.train), rows)[index.numpy()]
    assert keep.any() and (rows == 0 or not keep.all())  # the subset case drops some rows
    kept = index.numpy()[keep]
    phi_t = treeshap_of_labels(teacher.booster, bundle.train.x[kept], bundle.train.y[kept], classes)
    mask = torch.as_tensor(keep)
    phi_s = jacobian_times_offset(student, x[mask], y[mask], ctx.x_train.mean(dim=0))
    logits = student(x)
    theirs = {
        "ce": alpha * cross_entropy(logits, y),
        "kd": (1 - alpha) * authors_kd(logits, teacher.train_logits[index], temperature),
        "imitation": lam * relative_imitation(phi_s, phi_t),
    }
    assert set(ours) == set(theirs)
    for name in theirs:
        assert_same(ours[name], theirs[name])
    assert_same(sum(ours.values()), sum(theirs.values()))
    # The term trains the student through its input gradient (double backpropagation). Ours
    # keeps TreeSHAP in float32 and takes its norms there (1e-7 relative), which a gradient entry
    # that is a sum of cancelling parts can show at 1e-6 of itself: entries compare at 1e-6 of
    # their tensor's largest.
    ours_grads = trained_grads(ours["imitation"], student)
    theirs_grads = trained_grads(theirs["imitation"], student)
    assert any(g.abs().max() > 0 for g in theirs_grads)
    for ours_g, theirs_g in zip(ours_grads, theirs_grads, strict=True):
        assert_same(ours_g, theirs_g, atol=max(ATOL, RTOL * float(theirs_g.abs().max())))


def test_imitation_floor_acts_only_where_the_teacher_explains_with_zeros() -> None:
    """Our guard, not in the reading restated above: a teacher norm below 1e-3 × the batch's mean
    teacher norm is raised to it. Elsewhere the loss is the restatement exactly; on an all-zero
    teacher row the restatement divides by zero and ours stays finite."""
    generator = torch.Generator().manual_seed(0)
    phi_s = torch.randn(5, 4, dtype=DOUBLE, generator=generator)
    phi_t = torch.randn(5, 4, dtype=DOUBLE, generator=generator)
    assert_same(imitation_loss(phi_s, phi_t), relative_imitation(phi_s, phi_t))
    phi_t[2] = 0.0
    assert not torch.isfinite(relative_imitation(phi_s, phi_t))
    floor = 1e-3 * phi_t.norm(dim=1).mean()
    expected = ((phi_s - phi_t).pow(2).sum(1) / phi_t.norm(dim=1).clamp_min(floor).pow(2)).mean()
    assert_same(imitation_loss(phi_s, phi_t), expected)


# --- xdistill -----------------------------------------------------------------------------------


class NetworkTeacher:
    """What xdistill reads of a network teacher (`bench.train.teachers.NetworkTeacher`): the frozen
    network in eval mode and its logits on the training split, in float64."""

    def __init__(self, module: nn.Module, x_train: torch.Tensor) -> None:
        self.module = module.eval()
        with torch.no_grad():
            self.train_logits = module(x_train)

    def outputs(self, batch: Batch, layers: list[str]) -> ModelOutput:
        return ModelOutput(self.train_logits[batch.index])


# No released code: Alharbi, Vu and Thai (arXiv:2111.06945) released none, and we could not read
# their paper past its abstract. Restated from the reading the project specifies (DESIGN §5,
# "XDistillation"), independently of bench.train.feature_losses where the reading leaves a choice:
#   α·CE(z_S, y) + (1 − α)·KD_T(z_S, z_T) + γ·mean((decoder(encoder(x)) − M_T(x))²),
# M_T the teacher's Grad-CAM (Selvaraju et al. 2017) of its predicted class, upsampled
# bilinearly to the input size and scaled to a maximum of 1 per sample; z_S the classifier on the
# student's last feature map concatenated with the encoder's code (resized to it). The Grad-CAM
# layer is the harness's rule (bench.explain.gradcam.gradcam_layer), not the paper's.


def selvaraju_grad_cam(
    model: nn.Module, layer: str, x: torch.Tensor, explained: torch.Tensor
) -> torch.Tensor:
    store: dict[str, torch.Tensor] = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda module, inputs, output: store.update(activation=output)
    )
    try:
        logits = model(x.clone().requires_grad_(True))
    finally:
        handle.remove()
    activation = store["activation"]
    chosen = logits[torch.arange(len(x)), explained].sum()
    (gradient,) = torch.autograd.grad(chosen, activation)
    cam = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, cam / peak, torch.zeros_like(cam)).detach()


def resized(code: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The encoder's code at the trunk's resolution: averaged when finer, bilinear when coarser."""
    if tuple(code.shape[-2:]) == tuple(size):
        return code
    if code.shape[-1] > size[-1]:
        return F.adaptive_avg_pool2d(code, tuple(size))
    return F.interpolate(code, size=tuple(size), mode="bilinear", align_corners=False)


# (channels, side, classes, student depth, ae_width): the encoder's code is coarser than, equal
# to and finer than the trunk's last map; the teacher's Grad-CAM layer varies with the side.
XDISTILL_SHAPES = [(1, 8, 3, 1, 8), (3, 12, 4, 2, 3), (3, 16, 2, 3, 5)]


@pytest.mark.parametrize(("channels", "side", "classes", "depth", "ae_width"), XDISTILL_SHAPES)
@pytest.mark.parametrize(("alpha", "temperature", "gamma"), [(0.5, 4.0, 1.0), (0.1, 8.0, 10.0)])
def test_xdistill_terms_and_reconstruction_gradient_are_the_restated_objective(
    channels: int,
    side: int,
    classes: int,
    depth: int,
    ae_width: int,
    alpha: float,
    temperature: float,
    gamma: float,
) -> None:
    rng = np.random.default_rng(side)
    rows = 9
    x_np = rng.normal(size=(rows, channels, side, side))
    bundle = bundle_of(x_np, np.arange(rows) % classes, classes, "image")
    torch.manual_seed(side)
    network = build_model("resnet", bundle.input_shape, classes, width=4, blocks=1).to(DOUBLE)
    teacher = NetworkTeacher(network, torch.as_tensor(bundle.train.x, dtype=DOUBLE))
    ctx = context(bundle, teacher, Architecture("small_cnn", (("width", 4), ("depth", depth))))
    index = torch.randperm(rows, generator=torch.Generator().manual_seed(1))[:5]
    method = XDistillation(
        {"alpha": alpha, "temperature": temperature, "gamma": gamma, "ae_width": ae_width}
    )
    seen: dict[str, Any] = {}

    def inspect(model: nn.Module, step: StepLoss, extra: nn.Module | None) -> None:
        assert extra is method.decoder  # trained alongside, not part of the scored student
        seen["student"] = model.to(DOUBLE)
        extra.to(DOUBLE)
        seen["terms"] = step(batch_of(ctx, index))

    inside_fit(ctx, inspect)
    with default_dtype(DOUBLE):  # the Grad-CAM layer is found by a forward pass of zeros
        method.fit(ctx)
    student, ours = seen["student"], seen["terms"]

    x, y = ctx.x_train[index], ctx.y_train[index]
    # Recomputed in training mode, as the step ran (the decoder is left in eval mode after fit).
    student.train()
    method.decoder.train()
    explained = teacher.train_logits.argmax(dim=1)
    layer = gradcam_layer(network, bundle.input_shape)
    maps = selvaraju_grad_cam(network, layer, ctx.x_train, explained)
    features = student.trunk(x)
    code = student.encoder(x)
    fused = torch.cat([features, resized(code, features.shape[-2:])], dim=1)
    logits = student.head(fused.mean(dim=(2, 3)))
    decoded = method.decoder(code)
    theirs = {
        "ce": alpha * cross_entropy(logits, y),
        "kd": (1 - alpha) * authors_kd(logits, teacher.train_logits[index], temperature),
        "reconstruction": gamma * (decoded - maps[index]).pow(2).mean(),
    }
    assert set(ours) == set(theirs)
    for name in theirs:
        assert_same(ours[name], theirs[name], atol=ATOL)
    assert_same(sum(ours.values()), sum(theirs.values()))
    # The reconstruction trains the encoder the classifier reads, and not the trunk.
    ours_grads = trained_grads(ours["reconstruction"], student)
    theirs_grads = trained_grads(theirs["reconstruction"], student)
    for ours_g, theirs_g in zip(ours_grads, theirs_grads, strict=True):
        assert_same(ours_g, theirs_g, atol=ATOL)
    encoder = {id(p) for p in student.encoder.parameters()}
    trained = [p for p in student.parameters() if p.requires_grad]
    reached = {id(p) for p, g in zip(trained, theirs_grads, strict=True) if g.abs().max() > 0}
    assert reached and reached <= encoder


# --- gbdt2nn: stage 1, the leaf embeddings ------------------------------------------------------

# motefly/DeepGBM (snapshot 6926d35bdcc3249befc127973d313e3c061f2bb2), models/components.py at its
# last change a5b1c9cb470abd980fa5a2118271ce2e92a6a1d3, `EmbeddingModel`, and train_models.py at
# cdd7b636bd81804bef92d84319607083a83d1996, `train_GBDT2NN`:
# - every group's trees are padded to the longest group's count; a shorter group's leaf indices
#   are shifted by one, index 0 of a slot being its padding;
# - per group, the one-hot of each tree slot's leaf (maxleaf + 1 columns a slot) times a
#   (slots·(maxleaf + 1), dim) matrix gives the embedding (`batchmul`), which goes through a
#   BatchNorm1d and dropout (removed here), then `bout`, a per-group linear map to the output;
# - the stage-1 loss is `joint_loss` = nn.MSELoss() between each group's output and the sum of its
#   trees' leaf outputs (`SubGBDTLeaf_cls`), a mean over rows and groups (outputs: one).
# The embedding matrix is built from our table, so the two share their parameters; DeepGBM's
# padding rows, learned there, are zero here (ours add nothing).


def random_leaves(sizes: Sequence[Sequence[int]], n: int, seed: int) -> torch.Tensor:
    """(groups, n, tree slots): a random leaf of every tree; padding slots hold 0."""
    generator = torch.Generator().manual_seed(seed)
    slots = max(len(group) for group in sizes)
    leaves = torch.zeros(len(sizes), n, slots, dtype=torch.int64)
    for g, group in enumerate(sizes):
        for t, count in enumerate(group):
            leaves[g, :, t] = torch.randint(count, (n,), generator=generator)
    return leaves


def deepgbm_group_outputs(
    table: torch.Tensor,
    head_weight: torch.Tensor,
    head_bias: torch.Tensor,
    leaves: torch.Tensor,
    sizes: Sequence[Sequence[int]],
) -> torch.Tensor:
    """`EmbeddingModel.forward`'s per-group outputs (rows, groups, outputs), BatchNorm and
    dropout removed, on DeepGBM's leaf layout."""
    k, n, slots = leaves.shape
    width = max(max(group) for group in sizes) + 1  # DeepGBM's `maxleaf + 1`
    place_g, place_col, source = [], [], []
    shifted = torch.zeros(n, k, slots, dtype=torch.int64)
    for g, group in enumerate(sizes):
        shift = int(len(group) < slots)
        offset = 0
        for t, count in enumerate(group):
            place_g += [g] * count
            place_col += [t * width + leaf + shift for leaf in range(count)]
            source += [offset + leaf for leaf in range(count)]
            shifted[:, g, t] = leaves[g, :, t] + shift
            offset += count
    g_index = torch.tensor(place_g)
    embed_w = torch.zeros(k, slots * width, table.shape[-1], dtype=table.dtype).index_put(
        (g_index, torch.tensor(place_col)), table[g_index, torch.tensor(source)]
    )
    one_hot = F.one_hot(shifted, width).to(table.dtype).reshape(n, k, slots * width)
    embedding = torch.bmm(one_hot.transpose(0, 1), embed_w)  # (groups, rows, dim)
    return torch.baddbmm(head_bias, embedding, head_weight).transpose(0, 1)


# (leaves of each tree, by group; embedding dim; outputs)
LEAF_SHAPES = [
    ([[4, 3, 4], [2, 4, 3]], 5, 1),  # groups of equal size
    ([[4, 4, 3], [3, 2]], 3, 1),  # a group one tree short: padded
    ([[5, 2], [3, 3], [4]], 4, 3),  # ragged groups; a multiclass model's three outputs
]


@pytest.mark.parametrize(("sizes", "dim", "outputs"), LEAF_SHAPES)
def test_leaf_embedding_output_and_stage_one_gradient_are_deepgbms(
    sizes: list[list[int]], dim: int, outputs: int
) -> None:
    n = 30
    leaves = random_leaves(sizes, n, seed=len(sizes))
    generator = torch.Generator().manual_seed(dim)
    raw = torch.randn(len(sizes), n, outputs, dtype=DOUBLE, generator=generator)
    # Unit variance per group: our fitting scale is then 1 (the departure undone).
    targets = raw / raw.flatten(1).std(dim=1)[:, None, None]
    torch.manual_seed(0)
    model = LeafEmbeddings(sizes, dim, outputs).to(DOUBLE)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    with default_dtype(DOUBLE):
        ours_out = model(leaves).detach()
        fit_leaf_embeddings(model, leaves, targets, 1, 0.01, torch.Generator().manual_seed(5))
    ours_grads = {name: p.grad for name, p in model.named_parameters()}

    params = {name: p.clone().requires_grad_(True) for name, p in initial.items()}
    theirs_out = deepgbm_group_outputs(**params, leaves=leaves, sizes=sizes)
    assert_same(ours_out.transpose(0, 1), theirs_out.detach())
    # fit_leaf_embeddings' one step: min(n, 1024) rows drawn from its generator.
    rows = torch.randint(n, (n,), generator=torch.Generator().manual_seed(5))
    picked = deepgbm_group_outputs(**params, leaves=leaves[:, rows], sizes=sizes)
    loss = (picked - targets[:, rows].transpose(0, 1)).pow(2).mean()  # nn.MSELoss
    theirs_grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    for name in params:
        assert_same(ours_grads[name], theirs_grads[name], atol=ATOL)


@pytest.mark.parametrize(("sizes", "dim", "outputs"), LEAF_SHAPES)
def test_stage_two_targets_are_batch_normalised_embeddings_and_the_heads_read_them(
    sizes: list[list[int]], dim: int, outputs: int
) -> None:
    """DeepGBM's stage-2 targets are the embedding after BatchNorm1d in eval mode (`GetEmbPred` of
    `lastlayer`) and its heads are `bout`'s weights, which read that normalised embedding. Ours
    standardise the fitted linear embedding per dimension (BatchNorm in eval mode with the
    training rows' statistics, eps 0, no affine) and fold the statistics into the heads."""
    n = 40
    leaves = random_leaves(sizes, n, seed=7)
    generator = torch.Generator().manual_seed(8)
    targets = 0.03 * torch.randn(len(sizes), n, outputs, dtype=DOUBLE, generator=generator) + 0.2
    torch.manual_seed(1)
    model = LeafEmbeddings(sizes, dim, outputs).to(DOUBLE)
    with default_dtype(DOUBLE):
        fitted = fit_leaf_embeddings(model, leaves, targets, 0, 0.01, torch.Generator())
        with torch.no_grad():
            embedding = model.embed(leaves).transpose(0, 1).reshape(n, -1)  # (rows, groups·dim)
            fitted_output = model(leaves)
    normalised = F.batch_norm(
        embedding, embedding.mean(dim=0), embedding.var(dim=0), training=False, eps=0.0
    )
    assert_same(fitted.embeddings, normalised.reshape(n, len(sizes), dim))
    scale = targets.flatten(1).std(dim=1)[:, None, None]  # our unit-variance fitting scale
    heads = torch.einsum("ngd,gdo->ngo", fitted.embeddings, fitted.head_weight) + fitted.head_bias
    assert_same(heads, (fitted_output * scale).transpose(0, 1))


# --- gbdt2nn: stage 2, the distilled network ----------------------------------------------------

# motefly/DeepGBM (snapshot 6926d35bdcc3249befc127973d313e3c061f2bb2), models/gbdt2nn.py at its
# last change a5b1c9cb470abd980fa5a2118271ce2e92a6a1d3, `GBDT2NN`:
# - `lastlayer`: the input with a zero column appended (train_models.py `concate_train_x`),
#   index_select of every group's used features, then per group `BatchDense` (a batched linear
#   map: weight (groups, in, out), bias (groups, 1, out)), BatchNorm1d (removed here) and ReLU for
#   every layer but the last, which outputs each group's embedding `pred` (rows, groups·dim);
# - `forward`: out = pred @ out_weight + out_bias, out_weight the stage-1 `bout` weights reshaped to
#   (groups·dim, outputs) and out_bias the sum of its biases; binary: sigmoid(out);
# - `joint_loss` = (1 − ratio)·nn.BCELoss()(out, y) + ratio·`emb_loss`, emb_loss = mean over rows
#   of Σ_j |Σ_c out_weight[j, c]|·(pred_j − target_j)², target the stage-2 embedding;
# helper.py at a5b1c9cb470abd980fa5a2118271ce2e92a6a1d3, `TrainWithLog`: ratio =
# loss_init · max(0.3, loss_dr^(epoch // loss_de)); main.py at
# cdd7b636bd81804bef92d84319607083a83d1996: loss_init 1, loss_dr 0.9, loss_de 5, max_epoch 50,
# nslices 10, embsize 20, tree_layers "10,5", feat_per_group 128.
# models/components.py `SubGBDTLeaf_cls` and tree_model_interpreter.py at
# a5b1c9cb470abd980fa5a2118271ce2e92a6a1d3: a group's features are ranked by the split gain its
# trees' split nodes sum per feature, the first feat_per_group kept and padded with the index of
# the zero column; train_models.py keeps min(features, feat_per_group) of them, sorted.


def deepgbm_used_features(dump: dict, trees: np.ndarray, count: int, n_features: int) -> list[int]:
    gain: dict[int, float] = {}

    def visit(node: dict) -> None:
        if "split_index" in node:
            gain[node["split_feature"]] = gain.get(node["split_feature"], 0.0) + node["split_gain"]
            visit(node["left_child"])
            visit(node["right_child"])

    for t in trees:
        visit(dump["tree_info"][t]["tree_structure"])
    ranked = [feature for feature, _ in sorted(gain.items(), key=lambda item: -item[1])][:count]
    ranked += [n_features] * (count - len(ranked))
    return sorted(ranked[: min(n_features, count)])


def batch_dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    rows, groups = len(x), weight.shape[0]
    out = torch.baddbmm(bias, x.view(rows, groups, -1).transpose(0, 1), weight)
    return out.transpose(0, 1).reshape(rows, -1)


def deepgbm_forward(
    student: nn.Module, x: torch.Tensor, batch_norm: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, pred) of DeepGBM's GBDT2NN with our student's weights; `batch_norm` puts back the
    BatchNorm1d between layers (fresh, in training mode: batch statistics, γ = 1, β = 0)."""
    used = student.features.reshape(-1)
    out = torch.cat([x, x.new_zeros(len(x), 1)], dim=1)[:, used]
    layers = [getattr(student, name)[0] for name in student.hidden_names] + [student.embedding]
    for i, layer in enumerate(layers):
        out = batch_dense(out, layer.weight, layer.bias)
        if i < len(layers) - 1:
            if batch_norm:
                out = F.batch_norm(out, None, None, training=True)
            out = F.relu(out)
    out_weight = student.head_weight.reshape(-1, student.head_weight.shape[-1])
    return out @ out_weight + student.head_bias.sum(dim=0), out


def deepgbm_task_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """nn.BCELoss on the sigmoid for one raw score; the natural extension, cross-entropy over the
    classes' raw scores, for several (DeepGBM handles binary and regression tasks only)."""
    if out.shape[1] == 1:
        return F.binary_cross_entropy(torch.sigmoid(out[:, 0]), y.to(out.dtype))
    return cross_entropy(out, y)


def deepgbm_embedding_loss(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    return ((pred - target).pow(2) * weight).sum(dim=1).mean()


def deepgbm_ratio(epoch: int, init: float = 1.0, rate: float = 0.9, every: int = 5) -> float:
    return init * max(0.3, rate ** (epoch // every))


def gbdt2nn_step(classes: int, params: dict[str, Any], epoch: int) -> dict[str, Any]:
    """GBDT2NN's stage-2 terms on one batch at `epoch`, as its `fit` computes them, with what
    they were computed from."""
    bundle, teacher = tabular_problem(classes, rounds=8 if classes == 2 else 4, seed=classes + 10)
    ctx = context(bundle, teacher, MLP_STUDENT)
    method = GBDT2NN({**params, "embedding_steps": 5})
    seen: dict[str, Any] = {"ctx": ctx, "method": method, "teacher": teacher}
    distil = method.distil_trees

    def remember(c: TrainContext) -> tuple[nn.Module, torch.Tensor]:
        student, targets = distil(c)
        seen["targets"] = targets.to(DOUBLE)
        return student, targets

    def inspect(model: nn.Module, step: StepLoss, extra: nn.Module | None) -> None:
        seen["student"] = model.to(DOUBLE)
        ctx.epoch = epoch
        seen["index"] = index = torch.randperm(len(bundle.train), generator=ctx.generator)[:16]
        seen["terms"] = step(batch_of(ctx, index))

    method.distil_trees = remember  # type: ignore[method-assign]
    inside_fit(ctx, inspect)
    torch.manual_seed(0)
    method.fit(ctx)
    return seen


# (groups, embedding_dim, features_per_group, width, depth, epoch of 5): r from 0.9 to 0.1.
GBDT2NN_CASES = [(3, 4, 2, 5, 2, 0), (2, 6, 3, 4, 1, 2), (4, 3, 2, 6, 3, 4)]


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize(("groups", "dim", "per_group", "width", "depth", "epoch"), GBDT2NN_CASES)
def test_gbdt2nn_stage_two_is_deepgbms_at_equal_ratio_and_unit_embedding_weights(
    classes: int, groups: int, dim: int, per_group: int, width: int, depth: int, epoch: int
) -> None:
    params = {
        "groups": groups,
        "embedding_dim": dim,
        "features_per_group": per_group,
        "width": width,
        "depth": depth,
    }
    seen = gbdt2nn_step(classes, params, epoch)
    ctx, method, student, index = seen["ctx"], seen["method"], seen["student"], seen["index"]
    ours = seen["terms"]
    x, y = ctx.x_train[index], ctx.y_train[index]

    # Each group's MLP reads DeepGBM's choice of features.
    booster = seen["teacher"].booster
    n_features = x.shape[1]
    trees = booster.num_trees()
    dump = booster.dump_model()
    for g, group in enumerate(random_groups(trees, groups, np.random.default_rng(ctx.seed))):
        theirs_features = deepgbm_used_features(dump, group, per_group, n_features)
        ours_features = student.features[g].tolist()
        assert [f for f in ours_features if f < n_features] == [
            f for f in theirs_features if f < n_features
        ]

    out, pred = deepgbm_forward(student, x)
    logits = student(x)
    if classes == 2:  # ours [0, s], s DeepGBM's single raw score
        assert_same(logits, torch.cat([torch.zeros_like(out), out], dim=1))
    else:
        assert_same(logits, out)
    r = method.embedding_weight(epoch, ctx.num_epochs)
    target = seen["targets"][index].reshape(len(index), -1)
    unit = torch.ones(groups * dim, dtype=DOUBLE)
    theirs = {
        "task": (1 - r) * deepgbm_task_loss(out, y),
        "embedding": r * deepgbm_embedding_loss(pred, target, unit) / (groups * dim),
    }
    assert set(ours) == set(theirs)
    for name in theirs:
        assert_same(ours[name], theirs[name])
    assert_same(sum(ours.values()), sum(theirs.values()))


# Measured on this test's data (binary, 3 groups × 4 dimensions, epoch 2): ours is 0.419 of
# DeepGBM's weighted L2, i.e. 1/(groups·dim) = 0.083 of the sum over dimensions, which DeepGBM
# weights by |Σ_c head weight| (here 0.02–0.34, mean 0.18): their weight is ours × groups·dim × w.
@pytest.mark.xfail(
    strict=True,
    reason=(
        "departure from motefly/DeepGBM models/gbdt2nn.py emb_loss (a5b1c9cb): ours is the plain "
        "mean of the squared embedding error over rows, groups and dimensions; DeepGBM sums over "
        "groups × dimensions with weights |Σ_c head weight| and averages over rows. Measured: "
        "ours = 0.419 × theirs on the test's data (1/(groups·dim) = 0.083 of the unweighted sum)"
    ),
)
def test_gbdt2nn_embedding_term_weights_dimensions_as_deepgbm() -> None:
    seen = gbdt2nn_step(2, {"groups": 3, "embedding_dim": 4, "features_per_group": 2}, 2)
    student, index = seen["student"], seen["index"]
    _, pred = deepgbm_forward(student, seen["ctx"].x_train[index])
    weight = student.head_weight.reshape(-1, student.head_weight.shape[-1]).sum(dim=1).abs()
    r = seen["method"].embedding_weight(2, seen["ctx"].num_epochs)
    target = seen["targets"][index].reshape(len(index), -1)
    assert_same(seen["terms"]["embedding"], r * deepgbm_embedding_loss(pred, target, weight))


@pytest.mark.xfail(
    strict=True,
    reason=(
        "departure from motefly/DeepGBM models/gbdt2nn.py GBDT2NN.lastlayer (a5b1c9cb): DeepGBM "
        "puts a BatchNorm1d between the layers of every group's MLP, ours has none; the raw "
        "scores of a fresh student differ (measured: by 0.37 of the largest raw score, 0.24 in "
        "norm, on the test's data)"
    ),
)
def test_gbdt2nn_student_normalises_between_layers_as_deepgbm() -> None:
    seen = gbdt2nn_step(2, {"groups": 3, "embedding_dim": 4, "features_per_group": 2}, 0)
    x = seen["ctx"].x_train[seen["index"]]
    out, _ = deepgbm_forward(seen["student"], x, batch_norm=True)
    assert_same(seen["student"](x)[:, 1:], out)


@pytest.mark.xfail(
    strict=True,
    reason=(
        "departure from motefly/DeepGBM helper.py TrainWithLog (a5b1c9cb): DeepGBM's ratio is "
        "1 · max(0.3, 0.9^(epoch // 5)), ours decays geometrically from r_start = 0.9 to "
        "r_end = 0.1 over the run; over DeepGBM's 50 epochs they differ by up to 0.349 (epoch 24)"
    ),
)
def test_gbdt2nn_ratio_schedule_is_deepgbms() -> None:
    method = GBDT2NN()
    ours = [method.embedding_weight(epoch, 50) for epoch in range(50)]
    theirs = [deepgbm_ratio(epoch) for epoch in range(50)]
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) <= RTOL


def test_gbdt2nn_ratio_gap_is_as_recorded() -> None:
    """The number the xfail above records, pinned, so that a change of schedule shows."""
    method = GBDT2NN()
    gaps = [abs(method.embedding_weight(e, 50) - deepgbm_ratio(e)) for e in range(50)]
    assert max(gaps) == pytest.approx(0.349, abs=1e-3) and int(np.argmax(gaps)) == 24
    assert math.isclose(method.embedding_weight(49, 50), 0.1) and deepgbm_ratio(49) > 0.38
