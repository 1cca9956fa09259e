"""Explainers and explanation agreement against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.explain.explainers import ClassScores, ExplainSettings, explain
from bench.metrics.explanation import (
    cosine_per_sample,
    spearman_per_sample,
    top_k_intersection_per_sample,
)
from bench.models import build_model

CPU = torch.device("cpu")


def linear_model(weights: list[list[float]]) -> nn.Module:
    layer = nn.Linear(len(weights[0]), len(weights), bias=True)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weights))
        layer.bias.fill_(0.3)
    return layer


def test_gradient_times_input_of_a_linear_model_by_hand() -> None:
    weights = [[1.0, -2.0, 0.5], [0.0, 1.0, 3.0], [2.0, 2.0, -1.0]]
    model = linear_model(weights)
    x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], dtype=np.float32)
    baseline = np.array([0.5, 0.5, 0.5], dtype=np.float32)
    targets = np.array([1, 2])
    got = explain("gxi", model, x, targets, 3, ExplainSettings(baseline), CPU)
    # Class scores are centred over classes: z_c − mean_k z_k has weights w_c − mean_k w_k.
    centred = np.array(weights) - np.array(weights).mean(axis=0)
    expected = centred[targets] * (x - baseline)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_binary_models_are_explained_as_half_margins() -> None:
    model = linear_model([[1.0, 0.0], [3.0, -1.0]])
    x = np.array([[1.0, 1.0]], dtype=np.float32)
    settings = ExplainSettings(np.zeros(2, dtype=np.float32))
    class1 = explain("gxi", model, x, np.array([1]), 2, settings, CPU)
    class0 = explain("gxi", model, x, np.array([0]), 2, settings, CPU)
    np.testing.assert_allclose(class1, [[1.0, -0.5]])  # (w1 - w0) / 2 * x
    np.testing.assert_allclose(class0, -class1)


def test_a_shift_shared_by_all_classes_changes_no_explanation() -> None:
    """Softmax ignores a shift shared by all classes, so must the explanations: adding the same
    input-dependent term to every logit leaves every explainer's attributions unchanged."""
    torch.manual_seed(0)
    base = build_model("mlp", (5,), 3, width=16, depth=2).eval()
    shift = nn.Linear(5, 1)

    class Shifted(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return base(x) + 10 * shift(x)  # one extra score, broadcast to every class

    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    targets = np.array([0, 1, 2, 0, 1, 2])
    settings = ExplainSettings(np.zeros(5, dtype=np.float32), ig_steps=16)
    for name in ("gxi", "ig", "saliency"):
        plain = explain(name, base, x, targets, 3, settings, CPU)
        shifted = explain(name, Shifted().eval(), x, targets, 3, settings, CPU)
        np.testing.assert_allclose(shifted, plain, rtol=1e-4, atol=1e-5, err_msg=name)


def test_integrated_gradients_are_complete() -> None:
    """IG's attributions add up to f(x) - f(baseline) (Sundararajan et al.'s completeness)."""
    torch.manual_seed(0)
    model = build_model("mlp", (5,), 3, width=16, depth=2).eval()
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    baseline = np.full(5, 0.1, dtype=np.float32)
    targets = np.array([0, 1, 2, 1])
    attributions = explain("ig", model, x, targets, 3, ExplainSettings(baseline, ig_steps=256), CPU)
    with torch.no_grad():
        scores = ClassScores(model, 3)(torch.as_tensor(x))
        reference = ClassScores(model, 3)(torch.as_tensor(baseline)[None])
    expected = (scores - reference).numpy()[np.arange(4), targets]
    np.testing.assert_allclose(attributions.sum(1), expected, atol=2e-3)


def test_grad_cam_is_a_non_negative_input_sized_map() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", (3, 16, 16), 4, width=4, depth=2).eval()
    x = np.random.default_rng(0).random((3, 3, 16, 16)).astype(np.float32)
    settings = ExplainSettings(np.zeros((3, 16, 16), dtype=np.float32))
    cam = explain("gradcam", model, x, np.array([0, 1, 2]), 4, settings, CPU)
    assert cam.shape == (3, 1, 16, 16)
    assert cam.min() >= 0.0


@pytest.mark.parametrize(("model_name", "kwargs"), [("small_cnn", {"width": 4, "depth": 3}),
                                                    ("resnet", {"width": 4, "blocks": 1})])  # fmt: skip
def test_the_one_grad_cam_equals_captums_layer_grad_cam(model_name: str, kwargs: dict) -> None:
    """The scoring explainer runs `bench.explain.gradcam.grad_cam`, which e2KD and XDistillation train
    on; on the centred class scores it equals Captum's `LayerGradCam`, upsampled as Captum does."""
    from captum.attr import LayerAttribution, LayerGradCam

    from bench.explain.gradcam import gradcam_layer

    torch.manual_seed(0)
    model = build_model(model_name, (3, 16, 16), 5, **kwargs).eval()
    x = np.random.default_rng(1).random((6, 3, 16, 16)).astype(np.float32)
    targets = np.array([0, 1, 2, 3, 4, 0])
    settings = ExplainSettings(np.zeros((3, 16, 16), dtype=np.float32))
    ours = explain("gradcam", model, x, targets, 5, settings, CPU)
    scores = ClassScores(model, 5).eval()
    layer = model.get_submodule(gradcam_layer(model, (3, 16, 16)))
    inputs, target = torch.as_tensor(x), torch.as_tensor(targets)
    cam = LayerGradCam(scores, layer).attribute(inputs, target=target, relu_attributions=True)
    captum = LayerAttribution.interpolate(cam, (16, 16), interpolate_mode="bilinear")
    assert captum.abs().max() > 0
    np.testing.assert_allclose(ours, captum.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_random_control_is_reproducible_and_input_dependent() -> None:
    x = np.random.default_rng(0).random((2, 6)).astype(np.float32)
    settings = ExplainSettings(np.zeros(6, dtype=np.float32))
    first = explain("random", None, x, np.array([0, 1]), 2, settings, CPU)
    again = explain("random", None, x, np.array([0, 1]), 2, settings, CPU)
    other = explain("random", None, x + 1, np.array([0, 1]), 2, settings, CPU)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_agreement_measures_by_hand() -> None:
    a = np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    b = np.array([[2.0, 4.0, 6.0, 8.0, 10.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    spearman = spearman_per_sample(a, b)
    assert spearman[0] == pytest.approx(1.0) and math.isnan(spearman[1])  # constant row
    reverse = spearman_per_sample(a[:1], b[1:])
    assert reverse[0] == pytest.approx(-1.0)
    cosine = cosine_per_sample(a, b)
    assert cosine[0] == pytest.approx(1.0)
    assert cosine[1] == pytest.approx(15 / (math.sqrt(5) * math.sqrt(55)))
    # k = ceil(0.2 * 5) = 1: top feature by |value| is the last one in a[0] and b[0].
    overlap = top_k_intersection_per_sample(a[:1], b[:1])
    assert overlap[0] == pytest.approx(1.0)
    c = np.array([[9.0, 0.0, 0.0, 0.0, 1.0]])
    assert top_k_intersection_per_sample(c, b[:1])[0] == pytest.approx(0.0)
    two = top_k_intersection_per_sample(c, b[:1], fraction=0.4)  # {0, 4} vs {3, 4}
    assert two[0] == pytest.approx(0.5)


def test_agreement_on_images_compares_whole_maps() -> None:
    maps = np.random.default_rng(0).random((3, 1, 4, 4))
    assert spearman_per_sample(maps, maps) == pytest.approx([1.0, 1.0, 1.0])
    assert spearman_per_sample(maps, -maps) == pytest.approx([-1.0, -1.0, -1.0])
