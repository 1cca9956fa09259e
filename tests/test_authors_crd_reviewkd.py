"""Our crd and reviewkd loss terms against restatements of the authors' released code.

Each comparison computes a method's terms the way training does (`Method.loss` with a real
`TrainContext`) and, on the same random float64 tensors and the same module weights, the
objective of the authors' code, restated here from our reading of it (repository, file and commit
above each restatement). They must agree to 1e-6 relative.

- crd: the embeddings, the contrast scores, Z (estimated once, on the first batch), the NCE loss
  of both anchors, the momentum update of the memory banks and the gradients reaching the
  student's features are RepDistiller's, over two steps whose batches share rows, for fixed memory
  tensors and the negative indices our sampler drew. The sampler itself is checked for what the
  authors' data set guarantees (K distinct samples of other classes per anchor) and for
  determinism; a short run of the real training loop checks the memory update where only training
  exercises it.
- reviewkd: the ABF fusions, the review path and the hierarchical context loss (HCL), with the
  warm-up ramp, are mdistiller's / ReviewKD's, terms and gradients.

What differs on purpose:
- crd clamps K to min(nce_k, N − n_max) (RepDistiller would repeat negatives): the authors'
  formulas are evaluated with the K that we use, which is all their code needs of it.
- reviewkd resizes with `match_spatial` (average pool / bilinear) where the authors interpolate
  with `nearest`. The comparisons with the authors' code run with our resize replaced by nearest
  (the departure undone); with equal resolutions, and for the 1×1 pooled level, the two resizes
  agree, checked without the replacement; the difference across resolutions is a strict xfail with
  its measured size.
- reviewkd's teacher features are post-ReLU (ours) where the authors read pre-activations: a
  choice of which tensor is hooked, not a formula; both sides here receive the same tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bench.methods.reviewkd as reviewkd_module
from bench.core.budgets import Architecture, TrainBudget
from bench.core.errors import BenchError
from bench.core.specs import TeacherSpec
from bench.data.bundle import DatasetBundle, Split
from bench.methods.crd import (
    ContrastiveRepresentationDistillation,
    ContrastMemory,
    count_negatives,
    pooled,
)
from bench.methods.reviewkd import (
    KnowledgeReview,
    ReviewKD,
    hierarchical_context_loss,
)
from bench.models import build_model
from bench.train.loop import TrainContext, seed_everything
from bench.train.losses import kd_kl
from bench.train.method import Batch, ModelOutput
from bench.train.teachers import NetworkTeacher
from tests.authorkit import assert_same

DOUBLE = torch.float64
CPU = torch.device("cpu")

# The tensors here are tiny: on a shared machine a second intra-op thread only spins.
pytestmark = pytest.mark.usefixtures("one_thread")


def image_bundle(labels: np.ndarray, side: int = 8) -> DatasetBundle:
    """Random 1×side×side images with these training labels (the splits share them)."""
    rng = np.random.default_rng(len(labels))
    x = rng.random((len(labels), 1, side, side), dtype=np.float32)
    split = Split(x, labels)
    names = tuple(f"c{i}" for i in range(int(labels.max()) + 1))
    return DatasetBundle("random", "0", "image", split, split, split, names)


def context(labels: np.ndarray, epochs: int = 1, seed: int = 0) -> TrainContext:
    """A real training context without a teacher: what `Method.loss` receives."""
    student = Architecture("small_cnn", (("width", 4), ("depth", 2)))
    budget = TrainBudget(epochs, 8, 1e-3)
    return TrainContext(image_bundle(labels), None, budget, student, CPU, seed)


def network_context(
    tmp_path: Path, labels: np.ndarray, epochs: int, batch_size: int, seed: int = 0
) -> TrainContext:
    """A context with a real (untrained, frozen) ResNet teacher for the shared training loop."""
    bundle = image_bundle(labels)
    torch.manual_seed(seed)
    module = build_model("resnet", bundle.input_shape, bundle.num_classes, width=4, blocks=1)
    spec = TeacherSpec("random", "0", "image", "resnet", {})
    teacher = NetworkTeacher(module, spec, bundle, CPU, {}, tmp_path)
    student = Architecture("small_cnn", (("width", 4), ("depth", 2)))
    budget = TrainBudget(epochs, batch_size, 1e-2)
    return TrainContext(bundle, teacher, budget, student, CPU, seed)


# --- CRD ------------------------------------------------------------------------------------

# HobbitLong/RepDistiller:
# - crd/criterion.py, commit 1fb2343fb5a61b37bedacac7630f07e3077d49cd: Embed = Linear then
#   x / ‖x‖₂; CRDLoss.forward = ContrastLoss(out_s) + ContrastLoss(out_t) with
#   (out_s, out_t) = ContrastMemory(embed_s(f_s), embed_t(f_t), idx, contrast_idx);
#   ContrastLoss: P_n = 1/N, m = K, log D1 = log(P_pos/(P_pos + m·P_n + 1e-7)),
#   log D0 = log(m·P_n/(P_neg + m·P_n + 1e-7)), loss = −(Σ log D1 + Σ log D0)/B.
# - crd/memory.py, commit 97c4c00b511b6a625870ddfe969cfe0e14539c3b: ContrastMemory.forward
#   gathers rows idx (B × (K + 1), column 0 the sample itself) of memory_v1 (students) and
#   memory_v2 (teachers), out_v2 = exp(memory_v1[idx]·v2/T), out_v1 = exp(memory_v2[idx]·v1/T);
#   Z_v1, Z_v2 = N · mean(out) on the first call, then fixed; returns out/Z; then, without
#   gradient, memory[y] ← normalise(momentum · memory[y] + (1 − momentum) · v).
# - helper/loops.py (same commit as criterion.py) and train_student.py, commit
#   7fd6effe626724b94587378aa12045fb3da029a6: f_s, f_t = feat[-1], the pooled penultimate
#   vectors; loss = γ·CE + α·DistillKL(T = 4) + β·CRD with γ = 1;
#   scripts/run_cifar_distill.sh, commit b0722bc8ae38f374958797e73e04ab0ec9b1b69d: CRD is
#   `-a 0 -b 0.8`, CRD+KD `-a 1 -b 0.8`; feat_dim 128, nce_k 16384, nce_t 0.07, nce_m 0.5.
# - dataset/cifar100.py, commit 107dbfc982645a8c6f0cf317676726a9c33ae951, CIFAR100InstanceSample
#   (mode `exact`): contrast_idx = [index, K samples of other classes, without replacement when
#   K fits].


def authors_embed(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    x = linear(x.view(x.shape[0], -1))
    norm = x.pow(2).sum(1, keepdim=True).pow(1.0 / 2)
    return x.div(norm)


def authors_pooled(feature_map: torch.Tensor) -> torch.Tensor:
    """RepDistiller's models: average-pool the last stage to 1×1, then flatten (feat[-1])."""
    return F.adaptive_avg_pool2d(feature_map, 1).view(feature_map.shape[0], -1)


class AuthorsContrastMemory:
    """`ContrastMemory` of RepDistiller, restated: its state is the two memories and `params`."""

    def __init__(
        self, memory_v1: torch.Tensor, memory_v2: torch.Tensor, k: int, t: float, momentum: float
    ) -> None:
        self.memory_v1, self.memory_v2 = memory_v1.clone(), memory_v2.clone()
        self.params = torch.tensor([k, t, -1, -1, momentum], dtype=DOUBLE)

    def forward(
        self, v1: torch.Tensor, v2: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k, t = int(self.params[0].item()), self.params[1].item()
        z_v1, z_v2, momentum = self.params[2].item(), self.params[3].item(), self.params[4].item()
        batch, output_size, input_size = v1.size(0), *self.memory_v1.shape
        weight_v1 = torch.index_select(self.memory_v1, 0, idx.view(-1)).detach()
        weight_v1 = weight_v1.view(batch, k + 1, input_size)
        out_v2 = torch.exp(torch.div(torch.bmm(weight_v1, v2.view(batch, input_size, 1)), t))
        weight_v2 = torch.index_select(self.memory_v2, 0, idx.view(-1)).detach()
        weight_v2 = weight_v2.view(batch, k + 1, input_size)
        out_v1 = torch.exp(torch.div(torch.bmm(weight_v2, v1.view(batch, input_size, 1)), t))
        if z_v1 < 0:
            self.params[2] = out_v1.mean() * output_size
            z_v1 = self.params[2].clone().detach().item()
        if z_v2 < 0:
            self.params[3] = out_v2.mean() * output_size
            z_v2 = self.params[3].clone().detach().item()
        out_v1 = torch.div(out_v1, z_v1).contiguous()
        out_v2 = torch.div(out_v2, z_v2).contiguous()
        with torch.no_grad():
            for memory, v in ((self.memory_v1, v1), (self.memory_v2, v2)):
                rows = torch.index_select(memory, 0, y.view(-1))
                rows.mul_(momentum)
                rows.add_(torch.mul(v, 1 - momentum))
                norm = rows.pow(2).sum(1, keepdim=True).pow(0.5)
                memory.index_copy_(0, y, rows.div(norm))
        return out_v1, out_v2


def authors_contrast_loss(x: torch.Tensor, n_data: int) -> torch.Tensor:
    eps = 1e-7
    bsz, m = x.shape[0], x.size(1) - 1
    pn = 1 / float(n_data)
    p_pos = x.select(1, 0)
    log_d1 = torch.div(p_pos, p_pos.add(m * pn + eps)).log_()
    p_neg = x.narrow(1, 1, m)
    log_d0 = torch.div(p_neg.clone().fill_(m * pn), p_neg.add(m * pn + eps)).log_()
    return -(log_d1.sum(0) + log_d0.view(-1, 1).sum(0)) / bsz


def class_labels(n_data: int, classes: int, seed: int) -> np.ndarray:
    """Unequal class sizes: every class present, the rest drawn at random."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.arange(classes), rng.integers(classes, size=n_data - classes)])


def crd_memory(
    labels: torch.Tensor, s_dim: int, t_dim: int, feat_dim: int, nce_k: int, params: dict
) -> ContrastMemory:
    """The module `trainable_modules` builds, in float64, from a fixed seed."""
    torch.manual_seed(s_dim * 10 + t_dim)  # the embeddings' initialisation
    generator = torch.Generator().manual_seed(feat_dim)
    memory = ContrastMemory(
        s_dim,
        t_dim,
        feat_dim,
        labels,
        count_negatives(nce_k, labels),
        generator,
        temperature=params["nce_t"],
        momentum=params["nce_m"],
    )
    return memory.to(DOUBLE)


# (batch, N, classes, student channels, teacher channels, feat_dim, nce_k)
CRD_SHAPES = [
    (4, 20, 2, 3, 5, 6, 16384),  # K clamped to N − n_max
    (6, 40, 4, 8, 8, 16, 7),  # K fits
    (5, 33, 3, 4, 6, 8, 16384),
]
CRD_PARAMS = [
    {"nce_t": 0.07, "nce_m": 0.5, "beta": 0.8, "kd_weight": 0.0, "temperature": 4.0},
    {"nce_t": 0.07, "nce_m": 0.5, "beta": 0.8, "kd_weight": 1.0, "temperature": 4.0},
    {"nce_t": 0.2, "nce_m": 0.9, "beta": 2.0, "kd_weight": 0.5, "temperature": 2.0},
    {"nce_t": 0.5, "nce_m": 0.0, "beta": 1.0, "kd_weight": 0.0, "temperature": 1.0},
]


@pytest.mark.parametrize(
    ("batch", "n_data", "classes", "s_dim", "t_dim", "feat_dim", "nce_k"), CRD_SHAPES
)
@pytest.mark.parametrize("params", CRD_PARAMS)
def test_crd_objective_memory_and_gradient_are_repdistillers(
    batch: int,
    n_data: int,
    classes: int,
    s_dim: int,
    t_dim: int,
    feat_dim: int,
    nce_k: int,
    params: dict,
) -> None:
    labels = class_labels(n_data, classes, seed=n_data)
    ctx = context(labels)
    method = ContrastiveRepresentationDistillation({**params, "feat_dim": feat_dim})
    method.memory = crd_memory(ctx.y_train, s_dim, t_dim, feat_dim, nce_k, params)
    memory = method.memory
    k = memory.num_negatives
    assert k == min(nce_k, n_data - int(np.bincount(labels).max()))
    theirs_memory = AuthorsContrastMemory(
        memory.student_bank, memory.teacher_bank, k, params["nce_t"], params["nce_m"]
    )
    generator = torch.Generator().manual_seed(batch + n_data)
    # Two steps; the second batch shares two rows with the first (updated memory rows are read).
    first = torch.randperm(n_data, generator=generator)[:batch]
    taken = set(first.tolist())
    rest = torch.tensor([i for i in range(n_data) if i not in taken])
    second = torch.cat([first[:2], rest[torch.randperm(len(rest), generator=generator)]])[:batch]
    for step, index in enumerate((first, second)):
        s_map = torch.randn(batch, s_dim, 3, 3, dtype=DOUBLE, generator=generator)
        t_map = F.relu(torch.randn(batch, t_dim, 2, 2, dtype=DOUBLE, generator=generator))
        s_map.requires_grad_(True)
        s_logits = 3 * torch.randn(batch, classes, dtype=DOUBLE, generator=generator)
        t_logits = 3 * torch.randn(batch, classes, dtype=DOUBLE, generator=generator)
        y = ctx.y_train[index]

        draw_state = memory.generator.get_state()
        ours = method.loss(
            Batch(ctx.x_train[index], y, index),
            ModelOutput(s_logits, {"block2": s_map}),
            ModelOutput(t_logits, {"layer3": t_map}),
            ctx,
        )
        # The negative indices our sampler drew for this step, drawn again from the same state.
        memory.generator.set_state(draw_state)
        negatives = memory.negatives(index)
        assert negatives.shape == (batch, k)
        assert (ctx.y_train[negatives] != y[:, None]).all()  # other classes only
        assert all(len(set(row.tolist())) == k for row in negatives)  # distinct
        contrast_idx = torch.cat([index[:, None], negatives], dim=1)

        f_s = authors_embed(memory.embed_student.linear, authors_pooled(s_map))
        f_t = authors_embed(memory.embed_teacher.linear, authors_pooled(t_map))
        out_s, out_t = theirs_memory.forward(f_s, f_t, index, contrast_idx)
        crd = authors_contrast_loss(out_s, n_data) + authors_contrast_loss(out_t, n_data)
        theirs = {
            "ce": F.cross_entropy(s_logits, y),
            "crd": params["beta"] * crd.squeeze(0),
        }
        if params["kd_weight"] > 0:
            kd = kd_kl(s_logits, t_logits, params["temperature"])
            theirs["kd"] = params["kd_weight"] * kd
        assert set(ours) == set(theirs), step
        for name in theirs:
            assert_same(ours[name], theirs[name])
        (ours_grad,) = torch.autograd.grad(ours["crd"], s_map)
        (theirs_grad,) = torch.autograd.grad(theirs["crd"], s_map)
        assert_same(ours_grad, theirs_grad)
        assert_same(memory.normalisers, theirs_memory.params[2:4].detach())
        assert_same(memory.student_bank, theirs_memory.memory_v1)
        assert_same(memory.teacher_bank, theirs_memory.memory_v2)


def test_crd_negatives_are_clamped_to_the_other_class_samples_of_the_largest_class() -> None:
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    # An anchor of class 0 has 10 − 5 samples of other classes: no more distinct negatives.
    assert count_negatives(16384, labels) == 5
    assert count_negatives(4, labels) == 4
    with pytest.raises(BenchError, match="two classes"):
        count_negatives(16384, torch.zeros(6, dtype=torch.long))


def test_crd_defaults_are_repdistillers_cifar100_values() -> None:
    expected = {
        "beta": 0.8,
        "kd_weight": 0.0,
        "temperature": 4.0,
        "feat_dim": 128,
        "nce_k": 16384,
        "nce_t": 0.07,
        "nce_m": 0.5,
    }
    assert dict(ContrastiveRepresentationDistillation.defaults) == expected
    assert dict(ContrastiveRepresentationDistillation.paper_defaults) == expected


def test_crd_negatives_come_from_the_run_seed(tmp_path: Path) -> None:
    """Same seed, same negatives and banks; another seed, others."""
    labels = class_labels(30, 3, seed=1)

    def draws(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        ctx = network_context(tmp_path, labels, epochs=1, batch_size=8, seed=seed)
        method = ContrastiveRepresentationDistillation()
        memory = method.trainable_modules(method.build_student(ctx), ctx)
        return memory.negatives(torch.arange(6)), memory.student_bank.clone()

    (a, bank_a), (b, bank_b), (c, _) = draws(0), draws(0), draws(1)
    assert torch.equal(a, b) and torch.equal(bank_a, bank_b)
    assert not torch.equal(a, c)


def test_crd_training_updates_the_batch_rows_by_the_momentum_rule(tmp_path: Path) -> None:
    """The shared loop, two epochs: at every step the batch's rows of both banks become
    normalise(m · old + (1 − m) · v), every other row is untouched, and Z is set once."""
    labels = class_labels(36, 3, seed=2)
    ctx = network_context(tmp_path, labels, epochs=2, batch_size=8)
    method = ContrastiveRepresentationDistillation({"nce_m": 0.7})
    loss = method.loss
    steps: list[torch.Tensor] = []
    initial_heads: list[torch.Tensor] = []

    def checked_loss(
        batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        memory = method.memory
        if not steps:
            initial_heads.append(memory.embed_student.linear.weight.detach().clone())
            initial_heads.append(memory.embed_teacher.linear.weight.detach().clone())
        before = [memory.student_bank.clone(), memory.teacher_bank.clone()]
        terms = loss(batch, student_out, teacher_out, ctx)
        with torch.no_grad():
            (s_map,), (t_map,) = student_out.features.values(), teacher_out.features.values()
            embedded = [
                memory.embed_student(pooled(s_map)),
                memory.embed_teacher(pooled(t_map)),
            ]
        others = torch.ones(len(labels), dtype=torch.bool)
        others[batch.index] = False
        banks = (memory.student_bank, memory.teacher_bank)
        for old, new, v in zip(before, banks, embedded, strict=True):
            expected = F.normalize(0.7 * old[batch.index] + 0.3 * v, dim=1)
            torch.testing.assert_close(new[batch.index], expected)
            assert not torch.equal(new[batch.index], old[batch.index])
            assert torch.equal(new[others], old[others])
        steps.append(memory.normalisers.clone())
        return terms

    method.loss = checked_loss
    seed_everything(0)
    method.fit(ctx)
    assert len(steps) == 2 * len(range(0, len(labels), 8))
    assert (steps[0] > 0).all()
    assert all(torch.equal(z, steps[0]) for z in steps)  # Z estimated once
    memory = method.memory
    assert not {"student_bank", "teacher_bank"} & {n for n, _ in memory.named_parameters()}
    trained_heads = (memory.embed_student.linear.weight, memory.embed_teacher.linear.weight)
    for initial, trained in zip(initial_heads, trained_heads, strict=True):
        assert not torch.equal(initial, trained)  # the embedding heads are optimised
    assert torch.isfinite(torch.tensor(ctx.history["loss/crd"])).all()


# --- ReviewKD ---------------------------------------------------------------------------------

# dvlab-research/ReviewKD, CIFAR-100/model/reviewkd.py, commit
# 6607308a444e0b53650639f6b040515b3d665e05 (mdistiller's mdistiller/distillers/ReviewKD.py,
# commit e8c5bb331e78c9d79a8894ca233caae78531cf7f, is the same code):
# - ABF: conv1 = 1×1 conv (no bias) + BN to mid channels; if fused, the review input y is
#   interpolated (nearest) to the level's size, z = sigmoid(1×1 conv(cat[x, y])) with two
#   channels, x = x·z₀ + y·z₁; x is interpolated (nearest) to out_shape if its side differs;
#   returns (conv2(x), x) with conv2 = 3×3 conv (no bias) + BN; kaiming_uniform_(a=1) on both
#   feature convolutions;
# - the review path: abfs built shallow → deep with mid = min(512, in_channels[-1]), reversed;
#   the deepest level (the pooled features, 1×1) is not fused; results inserted front-first;
# - hcl: per level, mse(fs, ft) + Σ_{l ∈ [4, 2, 1], l < h} 2^{-i}·mse(pool_l(fs), pool_l(ft)),
#   divided by the sum of the weights used; summed over levels.
# mdistiller: loss = CE_WEIGHT·CE + REVIEWKD_WEIGHT·min(epoch/WARMUP_EPOCHS, 1)·hcl, epochs
# counted from 1 (mdistiller/engine/trainer.py); mdistiller/engine/cfg.py, commit
# a08d46f10d6102bd6e3f258ca5ac880b020ea259: CE_WEIGHT 1, REVIEWKD_WEIGHT 1, WARMUP_EPOCHS 20 of
# SOLVER.EPOCHS 240. The teacher's levels are its stages and its pooled features.


def authors_hcl(fstudent: Sequence[torch.Tensor], fteacher: Sequence[torch.Tensor]) -> torch.Tensor:
    loss_all = 0.0
    for fs, ft in zip(fstudent, fteacher, strict=True):
        h = fs.shape[2]
        loss = F.mse_loss(fs, ft, reduction="mean")
        cnt, tot = 1.0, 1.0
        for level in (4, 2, 1):
            if level >= h:
                continue
            cnt /= 2.0
            loss += (
                F.mse_loss(F.adaptive_avg_pool2d(fs, level), F.adaptive_avg_pool2d(ft, level)) * cnt
            )
            tot += cnt
        loss_all = loss_all + loss / tot
    return loss_all


class AuthorsABF(nn.Module):
    def __init__(self, in_channel: int, mid_channel: int, out_channel: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channel, mid_channel, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid_channel),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channel, out_channel, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(out_channel),
        )
        self.att_conv = (
            nn.Sequential(nn.Conv2d(mid_channel * 2, 2, kernel_size=1), nn.Sigmoid())
            if fuse
            else None
        )

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None, shape: int | None, out_shape: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        x = self.conv1(x)
        if self.att_conv is not None:
            y = F.interpolate(y, (shape, shape), mode="nearest")
            z = self.att_conv(torch.cat([x, y], dim=1))
            x = x * z[:, 0].view(n, 1, h, w) + y * z[:, 1].view(n, 1, h, w)
        if x.shape[-1] != out_shape:
            x = F.interpolate(x, (out_shape, out_shape), mode="nearest")
        return self.conv2(x), x


def authors_review(
    abfs: Sequence[AuthorsABF],
    features: Sequence[torch.Tensor],
    shapes: Sequence[int],
    out_shapes: Sequence[int],
) -> list[torch.Tensor]:
    """ReviewKD.forward_train's student side; `abfs`, `shapes`, `out_shapes` deep → shallow,
    `features` shallow → deep with the pooled features last, as the authors list them."""
    x = features[::-1]
    out, res = abfs[0](x[0], None, None, out_shape=out_shapes[0])
    results = [out]
    for feature, abf, shape, out_shape in zip(
        x[1:], abfs[1:], shapes[1:], out_shapes[1:], strict=True
    ):
        out, res = abf(feature, res, shape, out_shape)
        results.insert(0, out)
    return results


# Our AttentionFusion's submodules and the authors' ABF's, which hold the same layers.
ABF_NAMES = {"reduce": "conv1", "output": "conv2", "attention": "att_conv"}


def authors_abfs_like(review: KnowledgeReview) -> list[AuthorsABF]:
    """The authors' ABFs, deep → shallow, loaded with copies of our fusions' weights."""
    abfs = []
    for fusion in reversed(review.fusions):
        conv = fusion.reduce[0]
        out_channels = fusion.output[0].out_channels
        fuse = fusion.attention is not None
        abf = AuthorsABF(conv.in_channels, conv.out_channels, out_channels, fuse).to(DOUBLE)
        state = {}
        for key, value in fusion.state_dict().items():
            head, _, tail = key.partition(".")
            state[f"{ABF_NAMES[head]}.{tail}"] = value.clone()
        abf.load_state_dict(state)
        abfs.append(abf)
    return abfs


def nearest(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The authors' resize, standing in for `match_spatial` (the departure undone)."""
    return F.interpolate(x, size=tuple(int(s) for s in size), mode="nearest")


# (batch, student levels [(channels, side)], teacher levels [(channels, side)]), shallow → deep
SAME_RESOLUTION = [
    (3, [(4, 4)], [(6, 4)]),  # one stage and the pooled level
    (4, [(3, 4), (5, 4)], [(6, 4), (8, 4)]),  # our digits students' two 4×4 blocks
    (2, [(8, 2)], [(4, 2)]),  # a 2×2 pair: only the 1×1 pyramid level
]
ACROSS_RESOLUTIONS = [
    (4, [(4, 4), (8, 4)], [(8, 4), (16, 2)]),  # digits: block1/layer2, block2/layer3
    (2, [(4, 16), (8, 8), (16, 4), (16, 4)], [(4, 32), (4, 32), (8, 16), (16, 8)]),  # 32×32
    (3, [(4, 8), (6, 4)], [(5, 16), (7, 8)]),  # the authors' layout: sides halve per stage
]


def reviewkd_terms(
    batch: int,
    student_levels: Sequence[tuple[int, int]],
    teacher_levels: Sequence[tuple[int, int]],
    weight: float,
    epoch: int,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[torch.Tensor]]:
    """Our terms through `ReviewKD.loss`, the authors' on the same tensors and weights, and the
    student maps (which require grad)."""
    torch.manual_seed(batch)
    generator = torch.Generator().manual_seed(batch + len(student_levels))
    s_maps = [
        torch.randn(batch, c, side, side, dtype=DOUBLE, generator=generator).requires_grad_(True)
        for c, side in student_levels
    ]
    t_maps = [
        F.relu(torch.randn(batch, c, side, side, dtype=DOUBLE, generator=generator))
        for c, side in teacher_levels
    ]
    logits = 3 * torch.randn(batch, 5, dtype=DOUBLE, generator=generator)
    y = torch.randint(5, (batch,), generator=generator)

    method = ReviewKD({"weight": weight})
    method.pairs = [(f"block{i}", f"layer{i}") for i in range(len(s_maps))]
    s_channels = [c for c, _ in student_levels]
    t_channels = [c for c, _ in teacher_levels]
    sizes = [(side, side) for _, side in teacher_levels]
    method.review = KnowledgeReview(
        [*s_channels, s_channels[-1]], [*t_channels, t_channels[-1]], [*sizes, (1, 1)]
    ).to(DOUBLE)
    ctx = context(np.arange(4) % 2, epochs=240)
    ctx.epoch = epoch
    ours = method.loss(
        Batch(torch.zeros(batch, 1, 1, 1), y, torch.arange(batch)),
        ModelOutput(logits, {s: m for (s, _), m in zip(method.pairs, s_maps, strict=True)}),
        ModelOutput(logits, {t: m for (_, t), m in zip(method.pairs, t_maps, strict=True)}),
        ctx,
    )

    abfs = authors_abfs_like(method.review)
    s_features = [*s_maps, authors_pooled(s_maps[-1])[:, :, None, None]]
    t_features = [*t_maps, authors_pooled(t_maps[-1])[:, :, None, None]]
    shapes = [1, *(side for _, side in reversed(student_levels))]
    out_shapes = [1, *(side for _, side in reversed(teacher_levels))]
    results = authors_review(abfs, s_features, shapes, out_shapes)
    ramp = min((epoch + 1) / 20, 1.0)  # mdistiller's epoch is ours + 1
    theirs = {
        "ce": F.cross_entropy(logits, y),
        "review": weight * ramp * authors_hcl(results, t_features),
    }
    return ours, theirs, s_maps


def assert_reviewkd_is_the_authors(
    ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], s_maps: list[torch.Tensor]
) -> None:
    assert set(ours) == set(theirs)
    for name in theirs:
        assert_same(ours[name], theirs[name])
    ours_grad = torch.autograd.grad(ours["review"], s_maps, retain_graph=True)
    theirs_grad = torch.autograd.grad(theirs["review"], s_maps)
    for ours_g, theirs_g in zip(ours_grad, theirs_grad, strict=True):
        assert_same(ours_g, theirs_g)


@pytest.mark.parametrize(("batch", "student", "teacher"), SAME_RESOLUTION + ACROSS_RESOLUTIONS)
@pytest.mark.parametrize(("weight", "epoch"), [(1.0, 0), (1.0, 7), (5.0, 19), (0.6, 100)])
def test_reviewkd_objective_is_the_authors_with_their_nearest_resize(
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
    student: list[tuple[int, int]],
    teacher: list[tuple[int, int]],
    weight: float,
    epoch: int,
) -> None:
    monkeypatch.setattr(reviewkd_module, "match_spatial", nearest)
    assert_reviewkd_is_the_authors(*reviewkd_terms(batch, student, teacher, weight, epoch))


@pytest.mark.parametrize(("batch", "student", "teacher"), SAME_RESOLUTION)
def test_reviewkd_equal_resolutions_need_no_resize_of_ours_or_theirs(
    batch: int, student: list[tuple[int, int]], teacher: list[tuple[int, int]]
) -> None:
    """Equal sides and the 1×1 pooled level: `match_spatial` is the authors' nearest here."""
    assert_reviewkd_is_the_authors(*reviewkd_terms(batch, student, teacher, 1.0, 30))


@pytest.mark.xfail(
    strict=True,
    reason=(
        "departure from ReviewKD (CIFAR-100/model/reviewkd.py, ABF.forward, commit 6607308a): "
        "across resolutions we resize with match_spatial (average pool to shrink, bilinear to "
        "grow), the authors with nearest; on these three layouts the review term differs by "
        "1.5 %, 4.5 % and 5.5 % relative (measured in float64)"
    ),
)
@pytest.mark.parametrize(("batch", "student", "teacher"), ACROSS_RESOLUTIONS)
def test_reviewkd_across_resolutions_is_the_authors(
    batch: int, student: list[tuple[int, int]], teacher: list[tuple[int, int]]
) -> None:
    assert_reviewkd_is_the_authors(*reviewkd_terms(batch, student, teacher, 1.0, 30))


@pytest.mark.parametrize("side", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("channels", [1, 6])
def test_hcl_skips_pyramid_levels_not_smaller_than_the_map(side: int, channels: int) -> None:
    generator = torch.Generator().manual_seed(side * 10 + channels)
    s = torch.randn(3, channels, side, side, dtype=DOUBLE, generator=generator)
    t = torch.randn(3, channels, side, side, dtype=DOUBLE, generator=generator)
    assert_same(hierarchical_context_loss(s, t), authors_hcl([s], [t]))
    if side == 1:  # no pyramid level below a 1×1 map: the plain mean squared error
        assert_same(hierarchical_context_loss(s, t), F.mse_loss(s, t))


def test_reviewkd_defaults_are_mdistillers() -> None:
    assert dict(ReviewKD.defaults) == {"weight": 1.0, "warmup_fraction": 20 / 240}
    assert dict(ReviewKD.paper_defaults) == dict(ReviewKD.defaults)


def test_reviewkd_training_trains_the_fusions_and_ramps_the_term(tmp_path: Path) -> None:
    """The shared loop on a real (untrained) ResNet teacher: the ABFs are optimised but not part
    of the student, and the warm-up scales the first epoch's term by 1/(fraction · epochs)."""
    labels = class_labels(24, 3, seed=3)
    ctx = network_context(tmp_path, labels, epochs=2, batch_size=12)
    method = ReviewKD({"warmup_fraction": 1.0})  # two warm-up epochs: ramps ½ then 1
    ramps: list[float] = []
    loss, build = method.loss, method.trainable_modules
    initial: dict[str, torch.Tensor] = {}

    def remembered(student: nn.Module, ctx: TrainContext) -> nn.Module:
        review = build(student, ctx)
        initial.update({k: v.detach().clone() for k, v in review.state_dict().items()})
        return review

    def recorded(
        batch: Batch, student_out: ModelOutput, teacher_out: ModelOutput, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        terms = loss(batch, student_out, teacher_out, ctx)
        s_levels = [student_out.features[s] for s, _ in method.pairs]
        t_levels = [teacher_out.features[t] for _, t in method.pairs]
        with torch.no_grad():
            ramps.append(float(terms["review"] / method.review_loss(s_levels, t_levels)))
        return terms

    method.loss, method.trainable_modules = recorded, remembered
    seed_everything(0)
    student = method.fit(ctx)
    assert method.pairs == [("block1", "layer2"), ("block2", "layer3")]
    assert ramps == pytest.approx([0.5, 0.5, 1.0, 1.0])
    trained = method.review.state_dict()
    for level, fusion in enumerate(("reduce", "output")):
        key = f"fusions.{level}.{fusion}.0.weight"
        assert not torch.equal(trained[key], initial[key])  # the optimiser reached the ABFs
    assert not {id(p) for p in student.parameters()} & {id(p) for p in method.review.parameters()}
    assert not method.review.training
