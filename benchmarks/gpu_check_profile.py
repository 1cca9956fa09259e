"""Plugin of `benchmarks/gpu_check.sh`: the `gpu-check` profile, the `cifar100` recipe and a
standard pair (resnet32x4 → resnet8x4 unless told otherwise) on a budget that fits the check, and
`gpu_check_shapes`, a slice of `concept_shapes` for the check's CPU dry run.

Loaded with `--plugin benchmarks/gpu_check_profile.py`; sized by the environment, read once at
import (worker processes inherit it):
XKD_CHECK_EPOCHS    epochs of the teacher and of the student (default 10); the recipe's step
                    schedule keeps its milestones at the same fractions of the run
XKD_CHECK_EXPLAIN   test images scored (default 256, the default profile's)
XKD_CHECK_SCORING   the profile whose image explainers, IG steps and Quantus budget score the
                    runs (default `default`; the dry run's `smoke` spends a tenth of it)
XKD_CHECK_IMAGES    training images of `gpu_check_shapes` (default 128; val and test take half)
XKD_CHECK_PAIR      `teacher:student`, one of `STANDARD_PAIRS` (default resnet32x4:resnet8x4;
                    the dry run's resnet56:resnet20 costs a tenth of its forward pass)
"""

from __future__ import annotations

import os
from dataclasses import replace

from bench.core.budgets import Architecture, ModalityBudget, Profile
from bench.data.bundle import DATASETS, DatasetBundle, DatasetLoaderOptions, Split, register_dataset
from bench.plan.profiles import PROFILES, STANDARD_PAIRS, cifar100_recipe, register_profile

EPOCHS = int(os.environ.get("XKD_CHECK_EPOCHS", 10))
N_EXPLAIN = int(os.environ.get("XKD_CHECK_EXPLAIN", 256))
N_IMAGES = int(os.environ.get("XKD_CHECK_IMAGES", 128))
SCORING = PROFILES.get(os.environ.get("XKD_CHECK_SCORING", "default")).budgets["image"]
PAIRS = {f"{pair.teacher}:{pair.student}": pair for pair in STANDARD_PAIRS}
PAIR = PAIRS[os.environ.get("XKD_CHECK_PAIR", "resnet32x4:resnet8x4")]
SHAPES = DATASETS.get("concept_shapes")

_default_image: ModalityBudget = PROFILES.get("default").budgets["image"]
register_profile(
    Profile(
        name="gpu-check",
        description=f"the cifar100 recipe, {PAIR.teacher} → {PAIR.student}, {EPOCHS} epochs: the "
        "GPU path in minutes",
        datasets=("cifar100",),
        seeds=(0,),
        budgets={
            "image": replace(
                _default_image,
                student=Architecture(PAIR.student),
                student_training=cifar100_recipe(PAIR.student_lr, EPOCHS),
                teacher_network=Architecture(PAIR.teacher),
                teacher_training=cifar100_recipe(0.05, EPOCHS),
                n_explain=N_EXPLAIN,
                explanation=SCORING.explanation,
            ),
        },
    )
)


def _first(split: Split, n: int) -> Split:
    return Split(split.x[:n], split.y[:n])


@register_dataset("gpu_check_shapes", modality="image", version=f"{SHAPES.version}-{N_IMAGES}")
def load(options: DatasetLoaderOptions) -> DatasetBundle:
    """The first XKD_CHECK_IMAGES training images of concept_shapes (val, test: half as many).

    Without the concept probe (1 000 scenes): dissecting it would cost the dry run more than
    everything else together, and the check is of training on the device, not of dissection.
    """
    full = SHAPES.load(options)
    return replace(
        full,
        name="gpu_check_shapes",
        version=f"{SHAPES.version}-{N_IMAGES}",
        train=_first(full.train, N_IMAGES),
        val=_first(full.val, N_IMAGES // 2),
        test=_first(full.test, N_IMAGES // 2),
        test_masks=None if full.test_masks is None else full.test_masks[: N_IMAGES // 2],
        extras={},
    )
