"""The KD loss against values computed by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from bench.methods.kd import KnowledgeDistillation
from bench.train.losses import kd_kl
from bench.train.method import Batch, ModelOutput


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_kd_kl_matches_hand_computation() -> None:
    student, teacher, temperature = [1.0, 2.0, 0.5], [3.0, 1.0, 0.0], 2.0
    p = softmax([t / temperature for t in teacher])
    q = softmax([s / temperature for s in student])
    expected = temperature**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    got = kd_kl(torch.tensor([student]), torch.tensor([teacher]), temperature)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_kd_kl_averages_over_the_batch_and_vanishes_on_equal_logits() -> None:
    a = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]])
    b = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    first = kd_kl(a[:1], b[:1], 4.0)
    assert float(kd_kl(a, b, 4.0)) == pytest.approx(float(first) / 2, rel=1e-6)
    assert float(kd_kl(b, b, 4.0)) == pytest.approx(0.0, abs=1e-7)


def test_kd_method_weights_its_terms_by_alpha() -> None:
    student = torch.tensor([[1.0, 2.0, 0.5], [0.2, -1.0, 0.3]])
    teacher = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    labels = torch.tensor([1, 2])
    method = KnowledgeDistillation({"alpha": 0.3, "temperature": 2.0})
    batch = Batch(torch.zeros(2, 1), labels, torch.arange(2))
    terms = method.loss(batch, ModelOutput(student), ModelOutput(teacher), ctx=None)  # type: ignore[arg-type]
    assert set(terms) == {"ce", "kd"}
    assert float(terms["ce"]) == pytest.approx(0.3 * float(F.cross_entropy(student, labels)))
    assert float(terms["kd"]) == pytest.approx(0.7 * float(kd_kl(student, teacher, 2.0)))
