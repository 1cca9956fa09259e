"""GBDT2NN's tree distillation and the explanation-imitation term it shares with kd_expl."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.core.specs import teacher_spec_for
from bench.data.bundle import DATASETS, DatasetLoaderOptions
from bench.explain.explainers import gradient_times_input, target_scores
from bench.methods.gbdt2nn import (
    GBDT2NN,
    GBDT2NNStudent,
    LeafEmbeddings,
    TreeEnsemble,
    fit_leaf_embeddings,
    random_groups,
)
from bench.plan.profiles import PROFILES
from bench.results.folder import ResultsFolder
from bench.train.explanation_losses import ExplanationImitation, imitation_loss
from bench.train.loop import TrainContext, seed_everything
from bench.train.method import METHODS
from bench.train.teachers import LightGBMTeacher, obtain_teacher

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
SMOKE = PROFILES.get("smoke")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """These tensors are tiny: on a shared 2-core machine a second intra-op thread only waits for
    a core (each op then costs a scheduler time slice), so the module runs single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """The smoke profile's LightGBM teachers of the embedded tables, trained once for the module."""
    results = tmp_path_factory.mktemp("teachers")
    out = {}
    for name in ("breast_cancer", "wine"):
        entry = DATASETS.get(name)
        bundle = entry.load(DatasetLoaderOptions())
        spec = teacher_spec_for(SMOKE, entry.name, entry.version, entry.modality)
        out[name] = (
            obtain_teacher(spec, bundle, ResultsFolder(results).teacher_folder(spec), CPU),
            bundle,
        )
    return out


def context(teacher: LightGBMTeacher, bundle, seed: int = 0) -> TrainContext:
    seed_everything(seed)
    budget = SMOKE.budgets["tabular"]
    return TrainContext(bundle, teacher, budget.student_training, budget.student, CPU, seed)


@pytest.mark.parametrize("dataset", ["breast_cancer", "wine"])
def test_tree_groups_add_up_to_the_teachers_raw_scores(teachers, dataset: str) -> None:
    teacher, bundle = teachers[dataset]
    trees = TreeEnsemble.from_booster(teacher.booster)
    leaves = teacher.booster.predict(bundle.test.x, pred_leaf=True).astype(np.int64)
    groups = random_groups(trees.num_trees, 4, np.random.default_rng(0))
    total = sum(trees.group_output(leaves, group) for group in groups)
    raw = teacher.booster.predict(bundle.test.x, raw_score=True).reshape(len(leaves), -1)
    np.testing.assert_allclose(total, raw, rtol=1e-5, atol=1e-5)


def test_random_groups_partition_the_trees_evenly_and_reproducibly() -> None:
    groups = random_groups(23, 5, np.random.default_rng(3))
    assert sorted(np.concatenate(groups).tolist()) == list(range(23))
    assert {len(g) for g in groups} <= {4, 5}
    again = random_groups(23, 5, np.random.default_rng(3))
    assert all((a == b).all() for a, b in zip(groups, again, strict=True))
    assert len(random_groups(3, 10, np.random.default_rng(0))) == 3  # never an empty group


def test_group_features_rank_by_split_gain_within_the_group(teachers) -> None:
    teacher, _ = teachers["breast_cancer"]
    trees = TreeEnsemble.from_booster(teacher.booster)
    group = np.array([0, 2, 5])
    # An independent reading of the same model: LightGBM's own table of split nodes.
    table = teacher.booster.trees_to_dataframe()
    splits = table[table["tree_index"].isin(group) & table["split_feature"].notna()]
    gain = splits.groupby("split_feature")["split_gain"].sum()
    gain.index = [int(name.split("_")[-1]) for name in gain.index]  # Column_7 -> 7
    expected = sorted(gain.sort_values(ascending=False).index[:3].tolist())
    assert trees.top_features(group, 3).tolist() == expected
    # Features no tree of the group splits on are never chosen.
    assert set(trees.top_features(group, 100).tolist()) == set(gain.index)


@pytest.mark.parametrize("dataset", ["breast_cancer", "wine"])
def test_leaf_embedding_reproduces_each_groups_output(teachers, dataset: str) -> None:
    teacher, bundle = teachers[dataset]
    trees = TreeEnsemble.from_booster(teacher.booster)
    leaves_np = teacher.booster.predict(bundle.train.x, pred_leaf=True).astype(np.int32)
    groups = random_groups(trees.num_trees, 3, np.random.default_rng(0))
    slots = np.stack([np.resize(g, max(map(len, groups))) for g in groups])
    leaves = torch.as_tensor(leaves_np[:, slots]).permute(1, 0, 2)
    targets = torch.as_tensor(np.stack([trees.group_output(leaves_np, g) for g in groups]))
    targets = targets.float()
    torch.manual_seed(0)
    model = LeafEmbeddings(
        [[len(trees.leaf_values[t]) for t in g] for g in groups], 20, trees.num_outputs
    )
    fitted = fit_leaf_embeddings(
        model, leaves, targets, 300, 0.01, torch.Generator().manual_seed(0)
    )
    assert min(fitted.r2) > 0.99
    for g in range(len(groups)):
        reproduced = fitted.embeddings[:, g] @ fitted.head_weight[g] + fitted.head_bias[g]
        spread = float(targets[g].max() - targets[g].min())
        assert float((reproduced - targets[g]).abs().max()) < 0.05 * spread
    # Standardised embeddings: what stage 2's L2 term compares.
    assert torch.allclose(fitted.embeddings.mean(0), torch.zeros(len(groups), 20), atol=1e-4)


def test_student_has_named_layers_right_shapes_and_needs_no_lightgbm(
    teachers, tmp_path: Path
) -> None:
    teacher, bundle = teachers["wine"]
    ctx = context(teacher, bundle)
    student = METHODS.get("gbdt2nn")().fit(ctx)
    assert isinstance(student, GBDT2NNStudent)
    names = dict(student.named_modules())
    assert {"hidden1", "hidden2", "embedding"} <= set(names)
    assert not student.head_weight.requires_grad  # the heads of stage 1 stay fixed
    x = torch.as_tensor(bundle.test.x)
    logits = student(x).detach()
    assert logits.shape == (len(bundle.test), 3)
    assert all(r2 > 0.99 for r2 in ctx.history["leaf_embedding/r2"])
    embedding_curve = ctx.history["loss/embedding"]
    assert len(embedding_curve) == ctx.num_epochs

    # DeepGBM's point: the distilled network runs where LightGBM is not even importable.
    torch.save(student, tmp_path / "student.pt")
    np.save(tmp_path / "x.npy", bundle.test.x)
    script = (
        "import sys; sys.modules['lightgbm'] = None\n"
        "import numpy as np, torch\n"
        f"student = torch.load({str(tmp_path / 'student.pt')!r}, weights_only=False)\n"
        f"x = torch.as_tensor(np.load({str(tmp_path / 'x.npy')!r}))\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, student(x).detach().numpy())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), logits.numpy(), rtol=1e-5)


@pytest.mark.parametrize("dataset", ["breast_cancer", "wine"])
def test_fixed_heads_on_the_leaf_embeddings_give_the_teachers_scores(teachers, dataset) -> None:
    teacher, bundle = teachers[dataset]
    student, targets = GBDT2NN().distil_trees(context(teacher, bundle))
    logits, embeddings = student.forward_with_embeddings(torch.as_tensor(bundle.train.x))
    assert logits.shape == (len(bundle.train), bundle.num_classes)
    assert embeddings.shape == targets.shape == (len(bundle.train), 10, 20)
    # An MLP that predicted every leaf embedding exactly would reproduce the teacher.
    heads = torch.einsum("ngd,gdo->no", targets, student.head_weight) + student.head_bias.sum(0)
    raw = teacher.booster.predict(bundle.train.x, raw_score=True).reshape(len(heads), -1)
    np.testing.assert_allclose(heads.detach().numpy(), raw, atol=0.02 * np.ptp(raw))
    if bundle.num_classes == 2:  # binary logits are [0, s], s being LightGBM's raw score
        assert torch.equal(logits[:, 0], torch.zeros(len(bundle.train)))


def test_each_group_sees_only_its_top_features(teachers) -> None:
    teacher, bundle = teachers["breast_cancer"]
    method = GBDT2NN({"features_per_group": 2, "embedding_steps": 20})
    student, _ = method.distil_trees(context(teacher, bundle))
    n_features = bundle.train.x.shape[1]
    used = {int(f) for f in student.features.flatten() if f < n_features}
    unused = sorted(set(range(n_features)) - used)
    assert len(used) <= 2 * 10 and unused
    x = torch.as_tensor(bundle.test.x)
    moved = x.clone()
    moved[:, unused] += 5.0
    assert torch.equal(student(x), student(moved))
    phi = gradient_times_input(student, x, torch.as_tensor(bundle.test.y), x.mean(0))
    assert float(phi[:, unused].abs().max()) == 0.0


def test_embedding_weight_decays_from_r_start_to_r_end() -> None:
    method = GBDT2NN({"r_start": 0.8, "r_end": 0.2})
    weights = [method.embedding_weight(e, 10) for e in range(10)]
    assert weights[0] == pytest.approx(0.8) and weights[-1] == pytest.approx(0.2)
    assert all(a > b for a, b in zip(weights, weights[1:], strict=False))


def test_gradient_times_input_of_a_linear_model_is_weight_times_offset() -> None:
    torch.manual_seed(0)
    x, baseline = torch.randn(6, 4), torch.randn(4)
    multiclass = nn.Linear(4, 3)
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    phi = gradient_times_input(multiclass, x, target, baseline)
    # The score of class c is centred over classes (z_c − mean_k z_k), as TreeSHAP's is.
    w = multiclass.weight.detach()
    centred = w - w.mean(dim=0)
    np.testing.assert_allclose(phi, centred[target] * (x - baseline), atol=1e-6)
    # Binary: class c is explained through (z_c − z_other) / 2, ± half LightGBM's score.
    binary = nn.Linear(4, 2)
    target = torch.tensor([0, 1, 1, 0, 0, 1])
    w = binary.weight.detach()
    expected = (w[target] - w[1 - target]) / 2 * (x - baseline)
    np.testing.assert_allclose(
        gradient_times_input(binary, x, target, baseline), expected, atol=1e-6
    )
    logits = torch.tensor([[1.0, 3.0], [2.0, -1.0]])
    assert target_scores(logits, torch.tensor([1, 1])).tolist() == [1.0, -1.5]
    three = torch.tensor([[1.0, 2.0, 6.0]])
    assert target_scores(three, torch.tensor([2])).tolist() == [3.0]


def test_imitation_loss_scales_each_sample_by_the_teachers_norm() -> None:
    phi_t = torch.tensor([[3.0, 4.0], [0.03, 0.04]])
    # A silent student misses every sample by exactly its teacher's norm: 1 per sample.
    assert float(imitation_loss(torch.zeros(2, 2), phi_t)) == pytest.approx(1.0)
    assert float(imitation_loss(phi_t.clone(), phi_t)) == 0.0
    # An all-zero teacher row is floored, not divided by zero.
    assert torch.isfinite(imitation_loss(torch.ones(2, 2), torch.tensor([[0.0, 0.0], [1.0, 1.0]])))


def test_imitation_term_alone_trains_an_mlp_through_its_gradient() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 5)
    y = (x[:, 0] > 0).long()
    baseline = x.mean(0)
    # The "teacher" explains with a linear score: its gradient × input is known in closed form.
    w = torch.tensor([2.0, -1.0, 0.5, 0.0, 1.5])
    phi_t = torch.where(y[:, None] == 1, w, -w) * (x - baseline)
    student = nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 2))
    optimiser = torch.optim.Adam(student.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        return imitation_loss(gradient_times_input(student, x, y, baseline, True), phi_t)

    first = float(loss().detach())
    for _ in range(200):
        optimiser.zero_grad()
        value = loss()
        value.backward()
        optimiser.step()
    assert float(loss().detach()) < 0.1 * first


def test_imitation_covers_a_fixed_subset_of_rows(teachers) -> None:
    teacher, bundle = teachers["breast_cancer"]
    ctx = context(teacher, bundle)
    imitation = ExplanationImitation(ctx, rows=50)
    assert imitation.rows == 50 and int((imitation.position >= 0).sum()) == 50
    again = ExplanationImitation(context(teacher, bundle, seed=7), rows=50)
    assert torch.equal(imitation.position, again.position)  # the run's seed does not move it
    outside = torch.nonzero(imitation.position < 0).squeeze(1)[:8]
    model = nn.Linear(bundle.train.x.shape[1], 2)
    zero = imitation.loss(model, ctx.x_train[outside], ctx.y_train[outside], outside)
    assert float(zero) == 0.0
    inside = torch.nonzero(imitation.position >= 0).squeeze(1)[:8]
    assert (
        float(imitation.loss(model, ctx.x_train[inside], ctx.y_train[inside], inside).detach()) > 0
    )
    # The teacher's explanations are its TreeSHAP for each row's label class.
    rows = inside.numpy()
    expected = teacher.contributions(bundle.train.x[rows]).for_targets(bundle.train.y[rows])
    np.testing.assert_allclose(
        imitation.phi_teacher[imitation.position[inside]], expected, rtol=1e-5
    )


@pytest.mark.parametrize("method", ["gbdt2nn_joint", "kd_expl"])
def test_joint_methods_log_the_imitation_term_and_reduce_it(teachers, method: str) -> None:
    teacher, bundle = teachers["breast_cancer"]
    ctx = context(teacher, bundle)
    student = METHODS.get(method)().fit(ctx)
    curve = ctx.history["loss/imitation"]
    assert len(curve) == ctx.num_epochs and curve[-1] < curve[0]
    assert student(torch.as_tensor(bundle.test.x)).shape == (len(bundle.test), 2)
