"""The CIFAR-100 architectures of the distillation literature, pinned to the authors' networks.

The reference is RepDistiller (github.com/HobbitLong/RepDistiller, commit
b84f547c5db6a35318d4671d7d5c4de74c822403), the code of the CRD paper (Tian et al., ICLR 2020)
that later work (ReviewKD, DKD, mdistiller, ...) reuses: each count below is
`sum(p.numel() for p in model_dict[name](num_classes=100).parameters())` from its
models/__init__.py, and each stage shape the shape of its `forward(x, is_feat=True)` feature at
that depth on a (3, 32, 32) input. The CRD paper's rounded figures are noted alongside.
"""

from __future__ import annotations

from functools import cache

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.errors import BenchError
from bench.explain.gradcam import conv_stages
from bench.methods.ofd import pre_activation
from bench.models import build_model, count_parameters, eval_mode
from bench.models.hooks import FeatureHooks
from bench.train.feature_losses import EMBEDDING_LAYER, feature_shapes

pytestmark = pytest.mark.usefixtures("one_thread")

CIFAR = (3, 32, 32)
CLASSES = 100

# name: RepDistiller's parameter count for 100 classes (path in that repository; CRD's figure).
PARAMETERS = {
    "resnet8x4": 1_233_540,  # models/resnet.py, resnet8x4; 1.23M
    "resnet32x4": 7_433_860,  # models/resnet.py, resnet32x4; 7.43M
    "resnet20": 278_324,  # models/resnet.py, resnet20; 0.28M
    "resnet56": 861_620,  # models/resnet.py, resnet56; 0.86M
    "resnet110": 1_736_564,  # models/resnet.py, resnet110; 1.74M
    "wrn_16_2": 703_284,  # models/wrn.py, wrn_16_2; 0.70M
    "wrn_40_2": 2_255_156,  # models/wrn.py, wrn_40_2; 2.26M
    "vgg8": 3_965_028,  # models/vgg.py, vgg8_bn; 3.96M
    "vgg13": 9_462_180,  # models/vgg.py, vgg13_bn; 9.46M
    "shufflenetv1": 949_258,  # models/ShuffleNetv1.py, ShuffleV1; 0.95M
}

RESNET_X4 = {
    "stem": (32, 32, 32),
    "layer1": (64, 32, 32),
    "layer2": (128, 16, 16),
    "layer3": (256, 8, 8),
}
RESNET = {
    "stem": (16, 32, 32),
    "layer1": (16, 32, 32),
    "layer2": (32, 16, 16),
    "layer3": (64, 8, 8),
}
WRN_K2 = {
    "stem": (16, 32, 32),
    "layer1": (32, 32, 32),
    "layer2": (64, 16, 16),
    "layer3": (128, 8, 8),
}
VGG = {
    "block1": (64, 32, 32),
    "block2": (128, 16, 16),
    "block3": (256, 8, 8),
    "block4": (512, 4, 4),
    "block5": (512, 4, 4),
}
SHUFFLE_V1 = {
    "stem": (24, 32, 32),
    "layer1": (240, 16, 16),
    "layer2": (480, 8, 8),
    "layer3": (960, 4, 4),
}

# name: each stage's output (C, H, W) in forward order, RepDistiller's features f0, f1, ...
STAGES = {
    "resnet8x4": RESNET_X4,
    "resnet32x4": RESNET_X4,
    "resnet20": RESNET,
    "resnet56": RESNET,
    "resnet110": RESNET,
    "wrn_16_2": WRN_K2,
    "wrn_40_2": WRN_K2,
    "vgg8": VGG,
    "vgg13": VGG,
    "shufflenetv1": SHUFFLE_V1,
}

# Stages whose pre-ReLU value OFD cannot read: a ShuffleNet unit ends with the ReLU of a sum
# or concatenation (RepDistiller refuses OFD for ShuffleNet too).
NO_PRE_ACTIVATION = {"shufflenetv1": {"layer1", "layer2", "layer3"}}


@cache
def network(name: str) -> nn.Module:
    """Each network built once for the module: the large ones take a while to initialise."""
    torch.manual_seed(0)
    return build_model(name, CIFAR, CLASSES)


@cache
def sample() -> torch.Tensor:
    return torch.randn(2, *CIFAR, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", PARAMETERS)
def test_parameter_count_is_the_authors(name: str) -> None:
    assert count_parameters(network(name)) == PARAMETERS[name]


@pytest.mark.parametrize("name", STAGES)
def test_stages_logits_and_embedding_have_the_authors_shapes(name: str) -> None:
    model = network(name)
    stages = list(STAGES[name])
    assert conv_stages(model) == stages
    assert model.last_conv_layer == stages[-1]
    shapes = feature_shapes(model, [*stages, EMBEDDING_LAYER, "head"], sample())
    assert {s: tuple(shapes[s][1:]) for s in stages} == STAGES[name]
    assert shapes[EMBEDDING_LAYER] == (2, STAGES[name][stages[-1]][0])
    assert shapes["head"] == (2, CLASSES)


@pytest.mark.parametrize("name", STAGES)
def test_pre_activation_is_what_each_stage_activates(name: str) -> None:
    """OFD's pre-ReLU value of every stage it supports: its ReLU is the stage's output."""
    model = network(name)
    refused = NO_PRE_ACTIVATION.get(name, set())
    sources = {s: pre_activation(model, s) for s in STAGES[name] if s not in refused}
    for stage in refused:
        with pytest.raises(BenchError, match="pre-ReLU"):
            pre_activation(model, stage)
    parts = [p for source in sources.values() for p in source.parts]
    with eval_mode(model), torch.no_grad(), FeatureHooks(model, [*sources, *parts]) as hooks:
        model(sample())
    for stage, source in sources.items():
        pre = source.read(hooks.features)
        assert (pre < 0).any()  # the ReLU has something to erase
        torch.testing.assert_close(F.relu(pre), hooks.features[stage])
        assert any(m is source.norm for m in model.get_submodule(stage).modules())


def test_vgg_pools_before_its_last_block_on_64_pixel_inputs_only() -> None:
    """RepDistiller's VGG pools between its fourth and fifth blocks when h == 64."""
    model = build_model("vgg8", (3, 64, 64), CLASSES)
    shapes = feature_shapes(model, conv_stages(model), torch.zeros(1, 3, 64, 64))
    assert [tuple(s[1:]) for s in shapes.values()] == [
        (64, 64, 64),
        (128, 32, 32),
        (256, 16, 16),
        (512, 8, 8),
        (512, 4, 4),
    ]


@pytest.mark.parametrize("name", ["resnet8x4", "wrn_16_2", "vgg8", "shufflenetv1"])
def test_any_channel_count_is_accepted(name: str) -> None:
    model = build_model(name, (1, 28, 28), 10)
    with eval_mode(model), torch.no_grad():
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_the_profile_resnet_is_unchanged_by_the_separate_stem_width() -> None:
    """Run ids and cached teachers depend on the `resnet` builder's parameters and their names."""
    model = build_model("resnet", CIFAR, 10, width=16, blocks=1)
    assert count_parameters(model) == 78_042
    assert model.stem[0].out_channels == 16
    assert [name for name, _ in model.named_children()] == [
        "stem",
        "layer1",
        "layer2",
        "layer3",
        "pool",
        "head",
    ]
    assert isinstance(model.layer1[0].shortcut, nn.Identity)  # stem and layer1 equally wide


@pytest.mark.parametrize(("name", "zero_bias", "classifier_std"),
                         [("resnet8x4", False, None), ("wrn_16_2", True, None),
                          ("vgg8", True, 0.01)])  # fmt: skip
def test_the_standard_architectures_start_from_the_authors_initialisation(
    name: str, zero_bias: bool, classifier_std: float | None
) -> None:
    """He-normal over the fan-out (RepDistiller's kaiming_normal_(mode="fan_out") and its
    normal_(0, sqrt(2 / (k·k·out)))), batch norms at 1 and 0; the classifier as each family's
    file leaves it (ResNets: PyTorch's; WRNs: bias 0; VGGs: N(0, 0.01), bias 0)."""
    torch.manual_seed(0)
    model = build_model(name, CIFAR, CLASSES)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.numel() > 20_000]
    for conv in convs:
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        std = (2 / fan_out) ** 0.5
        assert conv.weight.std().item() == pytest.approx(std, rel=0.05)
    assert convs
    assert all((m.weight == 1).all() and (m.bias == 0).all()
               for m in model.modules() if isinstance(m, nn.BatchNorm2d))  # fmt: skip
    assert (model.head.bias == 0).all() == zero_bias
    if classifier_std is not None:
        assert model.head.weight.std().item() == pytest.approx(classifier_std, rel=0.05)


def test_the_profile_resnet_keeps_pytorchs_initialisation() -> None:
    """Kaiming-uniform with a = √5: variance 1 / (3·fan_in), a third of He's 2 / fan_out here."""
    torch.manual_seed(0)
    conv = build_model("resnet", CIFAR, 10, width=16, blocks=1).layer1[0].conv1
    fan_in = conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx((1 / (3 * fan_in)) ** 0.5, rel=0.1)
