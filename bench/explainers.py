"""Explainers: attributions of a model's class score, through Captum, plus a random control.

All explainers see the model through `ClassScores`, so that a network student is explained in the
terms TreeSHAP explains a LightGBM teacher (see `bench.treeshap`): binary class c as the margin
z_c - z_other, multiclass class c as its logit z_c.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency
from torch import nn

from bench.explanation_loss import gradient_times_input
from bench.registry import Registry


class ClassScores(nn.Module):
    """The raw score explained for each class (binary: margins, so both classes are explained)."""

    def __init__(self, module: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.module = module
        self.binary = num_classes == 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.module(x)
        if not self.binary:
            return logits
        margin = logits[:, 1] - logits[:, 0]
        return torch.stack([-margin, margin], dim=1)


@dataclass(frozen=True)
class ExplainSettings:
    """What explainers need besides the model: a baseline and step/seed settings from the profile."""

    baseline: np.ndarray  # one input-shaped reference point (tables: the training mean)
    ig_steps: int = 32
    seed: int = 0


AttributeFn = Callable[[ClassScores, torch.Tensor, torch.Tensor, ExplainSettings], torch.Tensor]


@dataclass(frozen=True)
class Explainer:
    name: str
    modalities: frozenset[str]
    attribute: AttributeFn
    description: str


EXPLAINERS: Registry[Explainer] = Registry("explainer")


def register_explainer(
    name: str, *, modalities: frozenset[str] = frozenset({"tabular", "image"})
) -> Callable[[AttributeFn], AttributeFn]:
    def add(fn: AttributeFn) -> AttributeFn:
        description = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())
        EXPLAINERS.register(name)(Explainer(name, modalities, fn, description))
        return fn

    return add


def _baseline_like(x: torch.Tensor, settings: ExplainSettings) -> torch.Tensor:
    baseline = torch.as_tensor(settings.baseline, dtype=x.dtype, device=x.device)
    return baseline.expand_as(x)


@register_explainer("gxi")
def _gradient_x_input(
    model: ClassScores, x: torch.Tensor, targets: torch.Tensor, settings: ExplainSettings
) -> torch.Tensor:
    """Gradient × (input − baseline): the first-order Taylor attribution around the baseline."""
    # The raw model: the shared function applies the class-score convention itself.
    return gradient_times_input(model.module, x, targets, _baseline_like(x, settings)).detach()


@register_explainer("ig")
def _integrated_gradients(
    model: ClassScores, x: torch.Tensor, targets: torch.Tensor, settings: ExplainSettings
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al. 2017) from the baseline, Riemann steps per profile."""
    return IntegratedGradients(model).attribute(
        x, baselines=_baseline_like(x, settings), target=targets, n_steps=settings.ig_steps
    )


@register_explainer("saliency")
def _saliency(
    model: ClassScores, x: torch.Tensor, targets: torch.Tensor, settings: ExplainSettings
) -> torch.Tensor:
    """Saliency (Simonyan et al. 2014): the absolute gradient of the class score."""
    # A leaf that already requires gradients: Captum would warn once per call that it set the flag.
    return Saliency(model).attribute(x.detach().requires_grad_(), target=targets, abs=True)


@register_explainer("gradcam", modalities=frozenset({"image"}))
def _grad_cam(
    model: ClassScores, x: torch.Tensor, targets: torch.Tensor, settings: ExplainSettings
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of the last convolutional block, upsampled bilinearly."""
    layer = model.module.get_submodule(model.module.last_conv_layer)
    cam = LayerGradCam(model, layer).attribute(x, target=targets, relu_attributions=True)
    return LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")


@register_explainer("random")
def _random(
    model: ClassScores, x: torch.Tensor, targets: torch.Tensor, settings: ExplainSettings
) -> torch.Tensor:
    """Uniform noise, independent of the model: the control that shows each metric's floor.

    The noise is seeded by the inputs and targets, so it is reproducible, yet differs for a
    perturbed input or another class, as an explanation that ignores the model would.
    """
    content = x.detach().cpu().numpy().tobytes() + targets.detach().cpu().numpy().tobytes()
    generator = torch.Generator().manual_seed(settings.seed + zlib.crc32(content))
    return torch.rand(x.shape, generator=generator).to(x.device) - 0.5


def explain(
    name: str,
    module: nn.Module,
    x: np.ndarray,
    targets: np.ndarray,
    num_classes: int,
    settings: ExplainSettings,
    device: torch.device,
    batch_size: int = 64,
) -> np.ndarray:
    """Attributions of `module` for each sample's target class, as a float32 array.

    Tables keep their (samples, features) shape; image attributions are summed over channels to
    one map per sample, (samples, 1, H, W), the form Quantus and the agreement metrics compare.
    """
    explainer = EXPLAINERS.get(name)
    model = ClassScores(module, num_classes).eval()
    parts = []
    for start in range(0, len(x), batch_size):
        chunk = torch.as_tensor(x[start : start + batch_size], device=device)
        target = torch.as_tensor(targets[start : start + batch_size], device=device)
        attribution = explainer.attribute(model, chunk, target, settings).detach()
        if attribution.dim() == 4:
            attribution = attribution.sum(dim=1, keepdim=True)
        parts.append(attribution.float().cpu().numpy())
    return np.concatenate(parts)
