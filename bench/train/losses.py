"""Loss terms shared by several methods, each written as its paper states it."""

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F


def kd_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float | torch.Tensor,
) -> torch.Tensor:
    """Hinton et al. 2015: T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch.

    The T² factor keeps the gradient's scale independent of the temperature, as the paper notes.
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def optional_kd(
    params: Mapping[str, Any], student_logits: torch.Tensor, teacher_logits: torch.Tensor
) -> dict[str, torch.Tensor]:
    """`{"kd": kd_weight · kd_kl(...)}` at the method's `temperature`, or nothing at weight 0.

    The KD term that feature methods add on request (RepDistiller's `-a`), off by default so
    that their rows measure their own term; `--set METHOD.kd_weight=1` gives their "+KD" rows.
    """
    if params["kd_weight"] <= 0:
        return {}
    kd = kd_kl(student_logits, teacher_logits, params["temperature"])
    return {"kd": params["kd_weight"] * kd}


# The authors' guard against a constant row, added to its standard deviation.
STANDARDISE_EPS = 1e-7


def standardise_logits(logits: torch.Tensor) -> torch.Tensor:
    """Sun et al. 2024: each row z-scored, (z − mean) / (1e-7 + std), the std unbiased (n − 1).

    A student need not match the teacher's logit range, only their relations: after the z-score a
    softmax at any temperature compares shapes, not scales. The unbiased deviation and the eps
    follow the authors' `normalize` (sunshangquan/logit-standardization-KD,
    `mdistiller/distillers/KD.py`); the test restates it (tests/test_presets.py).
    """
    mean = logits.mean(dim=-1, keepdim=True)
    return (logits - mean) / (STANDARDISE_EPS + logits.std(dim=-1, keepdim=True))


def relation_precision(device: torch.device) -> torch.autocast:
    """A region with autocast off, for the relation matrices of a batch.

    Under float16 autocast a Gram matrix of flattened activations can overflow and the expansion
    ‖a‖² + ‖b‖² − 2a·b of a distance cancels to noise; the methods compute their relations in
    float32 (see `at_least_float32`) whatever precision the loop trains in.
    """
    return torch.autocast(device.type, enabled=False)


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in float32 unless already finer (float64 tests stay so)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))
