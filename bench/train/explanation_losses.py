"""Explanation imitation for tabular students: a differentiable gradient×input and its loss.

Shared by `gbdt2nn_joint` and `kd_expl` so that both rows train the same auxiliary term and differ
only in their students. The teacher's explanation is TreeSHAP in raw-score space for the sample's
label class (`bench.explain.treeshap`); the student's is gradient × (input − baseline) of its raw score for
the same class, computed with `create_graph=True` so that the loss reaches the student's weights.

Huang, Li, Yan, Luo and Li, "Joint learning of interpretation and distillation", arXiv:2005.11638
(2020), imitate a teacher's explanation as an auxiliary task while distilling GBDT2NN. We could not
confirm their exact loss, so this module is our reading (DESIGN §5): λ · mean over samples of
‖φ_S − φ_T‖² / ‖φ_T‖², i.e. each sample's pair of vectors divided by the teacher's norm, so that
samples with large raw scores do not dominate the term.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from bench.explain.explainers import gradient_times_input

if TYPE_CHECKING:
    from bench.train.loop import TrainContext

# Fixed, not the run's seed: every run of a dataset imitates the teacher on the same rows, so the
# teacher's TreeSHAP of that subset is computed once and cached beside the teacher.
IMITATION_SUBSET_SEED = 0


def imitation_loss(
    phi_student: torch.Tensor, phi_teacher: torch.Tensor, relative_floor: float = 1e-3
) -> torch.Tensor:
    """Mean over samples of ‖φ_S − φ_T‖² / ‖φ_T‖²: both vectors scaled by the teacher's norm.

    A teacher norm is floored at `relative_floor` times the batch's mean teacher norm, so that a
    sample the teacher explains with (nearly) all-zero contributions cannot blow the term up.
    """
    norm = phi_teacher.norm(dim=1)
    floor = relative_floor * norm.mean().clamp_min(1e-12)
    scale = norm.clamp_min(floor)[:, None]
    return ((phi_student - phi_teacher) / scale).pow(2).sum(dim=1).mean()


class ExplanationImitation:
    """The teacher's TreeSHAP on a seeded subset of training rows, and the loss against it.

    On large tables the double backward pass and TreeSHAP cost grow with the rows imitated, so at
    most `rows` training rows (a fixed, seeded subset) carry the term; a batch's loss averages over
    its rows that belong to the subset.
    """

    def __init__(self, ctx: TrainContext, rows: int) -> None:
        x, y = ctx.bundle.train.x, ctx.bundle.train.y
        n = len(y)
        if rows <= 0 or rows >= n:
            subset = np.arange(n)
        else:
            rng = np.random.default_rng(IMITATION_SUBSET_SEED)
            subset = np.sort(rng.choice(n, size=rows, replace=False))
        # The whole split is passed as is when it is used whole, so that its cache entry is shared
        # with every other user of the training split's TreeSHAP.
        x_subset = x if len(subset) == n else x[subset]
        contributions = ctx.teacher.contributions(x_subset) if ctx.teacher is not None else None
        if contributions is None:
            raise TypeError(
                "explanation imitation needs a tree teacher with TreeSHAP contributions"
            )
        phi = contributions.for_targets(y[subset])
        self.phi_teacher = torch.as_tensor(phi, dtype=torch.float32, device=ctx.device)
        # Position of every training row in the subset, or -1 for rows outside it.
        position = np.full(n, -1, dtype=np.int64)
        position[subset] = np.arange(len(subset))
        self.position = torch.as_tensor(position, device=ctx.device)
        self.baseline = ctx.x_train.mean(dim=0)
        self.rows = len(subset)

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:
        """The imitation term on the rows of a batch (given by `index`) that are in the subset."""
        where = self.position[index]
        keep = where >= 0
        if not bool(keep.any()):
            return x.new_zeros(())
        phi_student = gradient_times_input(
            model, x[keep], y[keep], self.baseline, create_graph=True
        )
        return imitation_loss(phi_student, self.phi_teacher[where[keep]])
