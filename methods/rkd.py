"""Relational knowledge distillation (Park, Kim, Lu and Cho 2019)."""

import torch
import torch.nn.functional as F

from bench.train.feature_losses import BatchRelationMethod
from bench.train.method import register_method

# The authors' floor under a squared distance before its square root (lenscloth/RKD `pdist`).
DISTANCE_EPS = 1e-12


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of an (N, D) matrix, (N, N), zero on the diagonal.

    Computed as the authors do, through ‖a‖² + ‖b‖² − 2a·b floored at `DISTANCE_EPS`; the floor
    keeps the square root's gradient finite for coinciding rows, and the diagonal is set to zero
    (with no gradient) rather than left at the floor.
    """
    squares = embeddings.pow(2).sum(dim=1)
    squared = squares[:, None] + squares[None, :] - 2 * embeddings @ embeddings.T
    distances = squared.clamp_min(DISTANCE_EPS).sqrt()
    diagonal = torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
    return distances.masked_fill(diagonal, 0.0)


def normalised_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """ψ_D = ‖t_i − t_j‖ / μ, μ the mean distance over the pairs of distinct samples."""
    n = len(embeddings)
    distances = pairwise_distances(embeddings)
    return distances / (distances.sum() / (n * (n - 1)))  # the n diagonal entries are zero


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Huber (δ = 1) between the two networks' normalised distances, averaged over the N² pairs.

    A batch of one sample has no pair and so no distance to keep: the term is zero there (the
    authors' code divides by an empty mean and returns NaN).
    """
    if len(student) < 2:
        return student.new_zeros(())
    return F.smooth_l1_loss(normalised_distances(student), normalised_distances(teacher))


def angle_cosines(embeddings: torch.Tensor) -> torch.Tensor:
    """ψ_A: entry [j, i, k] is cos ∠(e_i, e_j, e_k), the angle at e_j, an (N, N, N) tensor.

    The unit vectors from e_j to every e_i are dotted with those to every e_k; a vector from e_j
    to itself normalises to zero, so degenerate triplets (i = j or k = j) give 0 in both networks.
    """
    directions = F.normalize(embeddings[None, :, :] - embeddings[:, None, :], p=2, dim=2)
    return directions @ directions.transpose(1, 2)


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Huber (δ = 1) between the two networks' angle cosines, averaged over all N³ triplets."""
    return F.smooth_l1_loss(angle_cosines(student), angle_cosines(teacher))


@register_method("rkd")
class RelationalKD(BatchRelationMethod):
    """CE + β·(w_d·Huber(ψ_D^S, ψ_D^T) + w_a·Huber(ψ_A^S, ψ_A^T)) on the pooled embeddings.

    Classic KD transfers what the teacher outputs for each sample on its own; RKD transfers how
    the teacher arranges samples relative to each other: the distances between every pair of
    embeddings in the batch (normalised by their mean, so that only the shape of the arrangement
    counts, not the scale of either network's features) and the angles of every triplet. Because
    the relations are scale-free and computed within each network, the student's embedding may
    have another width than the teacher's and needs no regressor.

    Defaults are the authors' CIFAR-100 setting: the weights w_d = 25 and w_a = 50 of
    HobbitLong/RepDistiller (`distiller_zoo/RKD.py` `RKDLoss`, as mdistiller's `cfg.RKD`), applied
    with β = 1 (`scripts/run_cifar_distill.sh`: `--distill rkd -a 0 -b 1`, cross-entropy weight 1)
    to the penultimate embedding (`helper/loops.py`: `feat_s[-1]`). They hold on our small networks:
    best validation accuracy on digits (default profile, seeds 0–2, three teachers; `python -m bench
    run --dataset digits --method rkd --set rkd.beta=B`, the maximum of the record's
    `training.history.val_accuracy`; mean ± standard deviation over seeds) is 0.9838 ± 0.0087 at β =
    1 and 0.9838 ± 0.0040 at β = 0.1.

    Departures from the released code (RepDistiller at commit 5237c1f, mdistiller at e8c5bb3,
    lenscloth/RKD `metric/loss.py`, all three the same formula): a batch of one sample (which
    the shared loop never forms, but a caller of the loss may) contributes no distance term
    instead of NaN; the relations are computed in float32 even when a GPU profile trains in float16 (the
    authors train in float32). Neither changes the loss of a batch of two or more in float32
    (tests/test_authors_relational.py).
    """

    family = "feature"
    modalities = frozenset({"image"})
    defaults = {"beta": 1.0, "distance_weight": 25.0, "angle_weight": 50.0}
    paper_defaults = {"beta": 1.0, "distance_weight": 25.0, "angle_weight": 50.0}
    citation = (
        "Park, Kim, Lu and Cho, Relational Knowledge Distillation, CVPR 2019, arXiv:1904.05068."
    )

    def relations(self, student: torch.Tensor, teacher: torch.Tensor) -> dict[str, torch.Tensor]:
        beta = self.params["beta"]
        return {
            "distance": beta * self.params["distance_weight"] * rkd_distance_loss(student, teacher),
            "angle": beta * self.params["angle_weight"] * rkd_angle_loss(student, teacher),
        }
