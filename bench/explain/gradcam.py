"""Where Grad-CAM is taken: the deepest convolutional stage whose map is fine enough to localise.

Grad-CAM (Selvaraju et al. 2017) is usually taken at a network's last convolutional block. On
small inputs that block can be a pixel or two: the default profile's ResNet-8 teacher ends at
2×2 on 8×8 `digits`, and a 2×2 map upsampled bilinearly is a ramp between four corner values,
the same ramp for every image (the teacher's saved `digits` maps correlated 0.82–0.998 with each
other, so an "agreement" on them measured the ramp). A map must have at least `MIN_SIDE` cells
along each side to say *where* in the image the evidence lies; 4 is the smallest grid that puts
an interior between the borders, and what a 4-block student keeps on 32×32 images.

Grad-CAM itself is defined once, here (`grad_cam`): the scoring explainer (`bench.explain.explainers`)
and the methods that train on Grad-CAM (e2KD, XDistillation) compute the same maps, and a test
holds it equal to Captum's `LayerGradCam`. Where it is taken is one rule, for every model and
every use: start at the model's `last_conv_layer` (or its last convolutional
stage) and walk back through its stages to the first whose output is at least `MIN_SIDE`×`MIN_SIDE`
on the dataset's input shape. A model with no such stage has no Grad-CAM: its Grad-CAM metrics
are not computed (`GradCamUnavailable`), rather than computed on a ramp.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.errors import BenchError
from bench.models import EVAL_BATCH, eval_mode
from bench.models.hooks import FeatureHooks

MIN_SIDE = 4


class GradCamUnavailable(BenchError):
    """No convolutional stage of the model is at least `MIN_SIDE` cells on a side."""


def conv_stages(model: nn.Module) -> list[str]:
    """Names of the top-level children that hold a convolution, in registration order.

    For the registered architectures these are their stages in forward order; pooling and the
    classifier hold no convolution and drop out.
    """
    stages = [
        name
        for name, child in model.named_children()
        if any(isinstance(m, nn.Conv2d) for m in child.modules())
    ]
    if not stages:
        raise BenchError(f"{type(model).__name__} has no convolutional stage")
    return stages


def last_conv_layer(model: nn.Module) -> str:
    """The model's `last_conv_layer` if it names one, else its last convolutional stage."""
    name = getattr(model, "last_conv_layer", None)
    return name if isinstance(name, str) else conv_stages(model)[-1]


@torch.no_grad()
def stage_sides(model: nn.Module, layers: Sequence[str], input_shape: Sequence[int]) -> list[int]:
    """The smaller spatial side of each layer's output on one input of `input_shape` (C, H, W),
    found by one forward pass in eval mode (batch-norm statistics are left untouched)."""
    with eval_mode(model):
        device = next(model.parameters()).device
        with FeatureHooks(model, layers) as hooks:
            model(torch.zeros(1, *input_shape, device=device))
            return [min(hooks.features[layer].shape[-2:]) for layer in layers]


def gradcam_layer(model: nn.Module, input_shape: Sequence[int]) -> str:
    """The layer Grad-CAM explains on inputs of `input_shape` (the module docstring's rule)."""
    key = ("gradcam_layer", tuple(input_shape), MIN_SIDE)
    cached = getattr(model, "_bench_gradcam", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    last = last_conv_layer(model)
    stages = conv_stages(model)
    candidates = stages[: stages.index(last) + 1] if last in stages else [*stages, last]
    sides = stage_sides(model, candidates, input_shape)
    for layer, side in zip(reversed(candidates), reversed(sides), strict=True):
        if side >= MIN_SIDE:
            # A plain attribute, not a buffer or module: it is not part of the state dict.
            object.__setattr__(model, "_bench_gradcam", (key, layer))
            return layer
    shown = ", ".join(f"{layer} {side}" for layer, side in zip(candidates, sides, strict=True))
    raise GradCamUnavailable(
        f"{type(model).__name__} has no convolutional stage of at least {MIN_SIDE}×{MIN_SIDE} on "
        f"inputs {tuple(input_shape)} (smaller sides: {shown}); Grad-CAM is not computed"
    )


def has_gradcam(model: nn.Module | None, input_shape: Sequence[int]) -> bool:
    """Whether `model` has a layer Grad-CAM may be taken at (tree ensembles have none)."""
    if model is None:
        return False
    try:
        gradcam_layer(model, input_shape)
    except GradCamUnavailable:
        return False
    return True


def grad_cam(activation: torch.Tensor, scores: torch.Tensor, *, create_graph: bool) -> torch.Tensor:
    """Selvaraju et al. 2017: ReLU(Σ_k α_k A_k) with α_k the spatial mean of ∂y_c/∂A_k, (N, H, W).

    `scores` holds each sample's class score y_c, computed from `activation`. The gradient of
    their sum is taken at once, which is each sample's own gradient as long as samples do not
    interact between the layer and the logits (true of the registered models' pooling-and-linear
    heads, also in train mode). With `create_graph=True` the map is differentiable in the model's
    weights, so a loss on it trains the model (e2KD).
    """
    (gradient,) = torch.autograd.grad(scores.sum(), activation, create_graph=create_graph)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activation).sum(dim=1))


def grad_cam_maps(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    target: torch.Tensor,
    batch_size: int = EVAL_BATCH,
) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) of a fixed model at `layer` for class `target`, detached.

    For teachers and trained students: the model runs in eval mode (its mode is restored after)
    and its weights are not touched, as gradients are taken with respect to the activation only.
    """
    maps = []
    with eval_mode(model), torch.enable_grad(), FeatureHooks(model, [layer]) as hooks:
        for start in range(0, len(x), batch_size):
            # An input that requires grad keeps a graph even if the weights are frozen.
            chunk = x[start : start + batch_size].detach().requires_grad_(True)
            logits = model(chunk)
            scores = logits.gather(1, target[start : start + batch_size, None]).squeeze(1)
            maps.append(grad_cam(hooks.features[layer], scores, create_graph=False).detach())
    return torch.cat(maps)
