"""Explainers: attributions of a model's class score, through Captum or by Shapley values, plus a
random control.

All explainers see the model through `ClassScores`, so that a network student is explained in the
terms TreeSHAP explains a LightGBM teacher (see `bench.explain.treeshap`): class c's score centred over
classes, z_c − mean_k z_k (`bench.explain.class_scores`), the part of z_c that the probabilities determine.
Interventional Shapley values (`bench.explain.shapley`) read only a model's outputs, so a tree
teacher is explained by them too, in the same game as its students, not by TreeSHAP.

Each explainer declares its `sign`: `signed` attributions say which way a feature pushes the
score (gradient×input, Integrated Gradients, TreeSHAP), `absolute` ones only how much (saliency
is |∇|, Grad-CAM is rectified). An agreement metric compares both sides in the explainer's form,
so a student's saliency is compared with |TreeSHAP| of a tree teacher, not with signed φ.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from bench.core.registry import Registry, first_paragraph
from bench.core.vocabulary import OWN_EXPLAINER, OWN_FALLBACK
from bench.explain.class_scores import CONVENTION, centre_over_classes
from bench.explain.gradcam import MIN_SIDE, grad_cam_maps, gradcam_layer, has_gradcam
from bench.explain.shapley import RULES as SHAPLEY_RULES
from bench.explain.shapley import interventional_shapley


def target_scores(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The score explained for each sample's target class: z_c − mean_k z_k (`bench.explain.class_scores`),
    the convention TreeSHAP teachers are explained in (`bench.explain.treeshap`)."""
    return centre_over_classes(logits).gather(1, target[:, None]).squeeze(1)


def gradient_times_input(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    baseline: torch.Tensor,
    create_graph: bool = False,
) -> torch.Tensor:
    """φ = ∂s_c/∂x ⊙ (x − baseline), one row per sample, for the raw score s_c of `target`.

    With `create_graph=True` the result is differentiable in the model's weights (double
    backpropagation), so it can be trained; otherwise it is a detached explanation.
    For a linear score w·x + b it equals w ⊙ (x − baseline) exactly.
    """
    inputs = x.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = target_scores(model(inputs), target)
        (gradient,) = torch.autograd.grad(scores.sum(), inputs, create_graph=create_graph)
    phi = gradient * (inputs - baseline)
    return phi if create_graph else phi.detach()


class ClassScores(nn.Module):
    """The score explained for each class: the logits centred over classes."""

    def __init__(self, module: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.module = module
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return centre_over_classes(self.module(x))


@dataclass(frozen=True)
class ExplainSettings:
    """What explainers need besides the model: a baseline, a background sample and step/seed
    settings from the profile."""

    baseline: np.ndarray  # one input-shaped reference point (tables: the training mean)
    ig_steps: int = 32
    seed: int = 0
    # Training rows the interventional Shapley game is played against
    # (`bench.explain.shapley.background_sample`); tables only, None for images.
    background: np.ndarray | None = None
    # The original feature (0..G−1) of each column of a table with one-hot encoded categories
    # (`DatasetBundle.feature_of_column`), None where every column is a feature of its own.
    groups: np.ndarray | None = None


AttributeFn = Callable[[ClassScores, torch.Tensor, torch.Tensor, ExplainSettings], torch.Tensor]


Sign = Literal["signed", "absolute"]
# What an explanation computed today depends on besides the model and the inputs: the class-score
# convention and where Grad-CAM is taken. Part of every cache key of explanations and of the
# settings of every metric scored on them, so that neither outlives a change of either rule.
EXPLANATION_RULES = f"{CONVENTION};gradcam-min-side-{MIN_SIDE}"


@dataclass(frozen=True)
class Explainer:
    name: str
    modalities: frozenset[str]
    attribute: AttributeFn
    description: str
    sign: Sign = "signed"
    # Whether a network can be explained at all on inputs of a shape (Grad-CAM needs a fine
    # enough layer, `bench.explain.gradcam`); None: always.
    requires: Callable[[nn.Module | None, tuple[int, ...]], bool] | None = None
    # Whether the attribution is a product with (input − baseline), so exactly 0 wherever the
    # input equals the baseline, for every model (IG, gradient × input): those features say
    # nothing about the model, and agreement metrics leave them out.
    zero_at_baseline: bool = False
    # What its attributions depend on besides the model, the inputs and the baseline: its own
    # estimator's rules, and whether it reads `ExplainSettings.background` (`cache_key`).
    rules: str = ""
    uses_background: bool = False

    def available(self, module: nn.Module | None, input_shape: tuple[int, ...]) -> bool:
        return self.requires is None or self.requires(module, input_shape)

    def in_form(self, attributions: np.ndarray) -> np.ndarray:
        """Another explainer's attributions (e.g. a tree teacher's TreeSHAP) in this one's form."""
        return np.abs(attributions) if self.sign == "absolute" else attributions


def explanation_rules(explainer: Explainer) -> str:
    """What every metric scored on `explainer`'s attributions hashes into its settings, and so
    into the run ids: the shared rules, and the explainer's own estimator (interventional
    Shapley's pairs and background) where it has one, so that a change of either is redone."""
    return f"{EXPLANATION_RULES};{explainer.rules}" if explainer.rules else EXPLANATION_RULES


EXPLAINERS: Registry[Explainer] = Registry("explainer")


def register_explainer(
    name: str,
    *,
    modalities: frozenset[str] = frozenset({"tabular", "image"}),
    sign: Sign = "signed",
    requires: Callable[[nn.Module | None, tuple[int, ...]], bool] | None = None,
    zero_at_baseline: bool = False,
    rules: str = "",
    uses_background: bool = False,
) -> Callable[[AttributeFn], AttributeFn]:
    def add(fn: AttributeFn) -> AttributeFn:
        description = first_paragraph(fn.__doc__)
        explainer = Explainer(
            name,
            modalities,
            fn,
            description,
            sign,
            requires,
            zero_at_baseline,
            rules,
            uses_background,
        )
        EXPLAINERS.register(name)(explainer)
        return fn

    return add


def _baseline_like(x: torch.Tensor, settings: ExplainSettings) -> torch.Tensor:
    baseline = torch.as_tensor(settings.baseline, dtype=x.dtype, device=x.device)
    return baseline.expand_as(x)


@register_explainer("gxi", zero_at_baseline=True)
def _gradient_x_input(
    model: ClassScores, x: torch.Tensor, targets: torch.Tensor, settings: ExplainSettings
) -> torch.Tensor:
    """Gradient × (input − baseline): the first-order Taylor attribution around the baseline."""
    # The raw model: the shared function applies the class-score convention itself.
    return gradient_times_input(model.module, x, targets, _baseline_like(x, settings)).detach()


@register_explainer("ig", zero_at_baseline=True)
def _integrated_gradients(
    model: ClassScores, x: torch.Tensor, targets: torch.Tensor, settings: ExplainSettings
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al. 2017) from the baseline, Riemann steps per profile."""
    return IntegratedGradients(model).attribute(
        x, baselines=_baseline_like(x, settings), target=targets, n_steps=settings.ig_steps
    )


@register_explainer("saliency", sign="absolute")
def _saliency(
    model: ClassScores, x: torch.Tensor, targets: torch.Tensor, settings: ExplainSettings
) -> torch.Tensor:
    """Saliency (Simonyan et al. 2014): the absolute gradient of the class score."""
    # A leaf that already requires gradients: Captum would warn once per call that it set the flag.
    return Saliency(model).attribute(x.detach().requires_grad_(), target=targets, abs=True)


@register_explainer(
    "gradcam", modalities=frozenset({"image"}), sign="absolute", requires=has_gradcam
)
def _grad_cam(
    model: ClassScores, x: torch.Tensor, targets: torch.Tensor, settings: ExplainSettings
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of the deepest convolutional stage of at least 4×4
    (`bench.explain.gradcam`), upsampled bilinearly."""
    # The layer's path inside `model`, which wraps the network as `module`.
    layer = "module." + gradcam_layer(model.module, tuple(x.shape[1:]))
    cam = grad_cam_maps(model, layer, x, targets, batch_size=len(x))
    return F.interpolate(cam[:, None], size=tuple(x.shape[2:]), mode="bilinear")


def explains_itself(module: nn.Module | None) -> bool:
    """Whether `module` carries an explainer of its own (`own_explanation`, e.g. XDistillation's
    trained decoder: `methods/xdistill.py`)."""
    return bool(getattr(module, "explains_itself", False))


def explainer_for(name: str, module: nn.Module | None) -> str:
    """The explainer that explains `module` under `name`: `own` is Grad-CAM for a network that
    does not explain itself, so its maps are Grad-CAM's, computed (and cached) once."""
    return OWN_FALLBACK if name == OWN_EXPLAINER and not explains_itself(module) else name


@register_explainer(
    OWN_EXPLAINER, modalities=frozenset({"image"}), sign="absolute", requires=has_gradcam
)
def _own(
    model: ClassScores, x: torch.Tensor, targets: torch.Tensor, settings: ExplainSettings
) -> torch.Tensor:
    """The explanation a method offers itself: its own explainer's map where it trains one
    (XDistillation's decoder), else Grad-CAM, as for every other network.

    Compared with the teacher's Grad-CAM of the true class of the centred score, like every
    image explainer. Ours departs from that target twice, as the method defines it: the decoder
    learnt the teacher's Grad-CAM of the class the teacher *predicts*, of its raw logit, and its
    map does not depend on the class asked for. No control row has such a class-free map, so the
    floors under `own` are Grad-CAM's.
    """
    if not explains_itself(model.module):
        return _grad_cam(model, x, targets, settings)
    return model.module.own_explanation(x)[:, None]


@register_explainer(
    "shapley", modalities=frozenset({"tabular"}), rules=SHAPLEY_RULES, uses_background=True
)
def _shapley(
    model: ClassScores, x: torch.Tensor, targets: torch.Tensor, settings: ExplainSettings
) -> torch.Tensor:
    """Interventional Shapley values against a background of training rows
    (`bench.explain.shapley`): the same game, estimated alike, for tree teachers and networks."""

    @torch.no_grad()
    def logits(rows: np.ndarray) -> np.ndarray:
        return model(torch.as_tensor(rows, device=x.device)).float().cpu().numpy()

    phi = interventional_shapley(
        logits,
        x.cpu().numpy(),
        targets.cpu().numpy(),
        settings.background,
        settings.seed,
        groups=settings.groups,
    )
    return torch.as_tensor(phi, device=x.device)


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


def cache_key(name: str, settings: ExplainSettings) -> tuple[tuple, tuple[np.ndarray, ...]]:
    """What a cache of `name`'s explanations must hash besides the model and the explained
    inputs: the settings and rules, and the arrays the explanations are computed against."""
    explainer = EXPLAINERS.get(name)
    # The rules metrics hash (`explanation_rules`): an explainer without rules of its own keeps
    # the key it had before `rules` existed.
    key = (name, settings.ig_steps, settings.seed, explanation_rules(explainer))
    # No background: the explainer raises before anything is cached.
    if explainer.uses_background and settings.background is not None:
        # The players of the game, where they are not the columns.
        grouping = () if settings.groups is None else (settings.groups,)
        return key, (settings.baseline, settings.background, *grouping)
    return key, (settings.baseline,)


def reference_point(name: str, settings: ExplainSettings) -> np.ndarray:
    """The point from which `name` measures a linear model's attributions, which are then
    (w_c − mean_k w_k) ⊙ (x − this point): the baseline for gradient × input and IG, the
    background's mean for interventional Shapley values (`bench.explain.shapley`)."""
    if EXPLAINERS.get(name).uses_background and settings.background is not None:
        return settings.background.mean(axis=0)
    return settings.baseline


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
    explainer = EXPLAINERS.get(explainer_for(name, module))
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
