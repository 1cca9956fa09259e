"""Logit standardisation as a switch of every standardisable logit method, and `--preset paper`.

The switch is checked against the authors' formula (restated below), and both it and the preset
against the plans they make: what rows they name, which parameters the runs get, and that a run
which sets neither keeps the run id it had before they existed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.core.budgets import Architecture, TrainBudget
from bench.core.errors import BenchError
from bench.core.registry import Registry
from bench.data.bundle import DatasetBundle, Split
from bench.plan.catalogue import from_registries
from bench.plan.planner import PRESETS, Selection, make_plan, preset_overrides
from bench.train.loop import TrainContext
from bench.train.losses import standardise_logits
from bench.train.method import METHODS, STANDARDISE, Batch, Method, ModelOutput, register_method
from tests.authorkit import logit_terms, random_logits

pytestmark = pytest.mark.usefixtures("one_thread")

RTOL = 1e-6


# --- the authors' formula, restated ---------------------------------------------------------


# sunshangquan/logit-standardization-KD, mdistiller/distillers/KD.py, commit
# 6083e2de122da0bffe6ff6e1fb25a6a80f6c3464: `normalize` z-scores each row with the unbiased
# standard deviation plus 1e-7, and `kd_loss(..., logit_stand=True)` applies it to both networks'
# logits before the temperature-softened KL, summed over classes, averaged over the batch, × T².
def authors_normalize(logits: torch.Tensor) -> torch.Tensor:
    centred = logits - logits.mean(dim=-1, keepdim=True)
    return centred / (1e-7 + logits.std(dim=-1, keepdim=True))


def authors_standardised_kd(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    log_student = F.log_softmax(authors_normalize(student) / temperature, dim=1)
    teacher_probs = F.softmax(authors_normalize(teacher) / temperature, dim=1)
    kl = F.kl_div(log_student, teacher_probs, reduction="none").sum(1).mean()
    return kl * temperature**2


@pytest.mark.parametrize(("batch", "classes", "seed"), [(8, 5, 0), (64, 10, 1), (3, 100, 2)])
def test_standardised_logits_equal_the_authors_normalize(
    batch: int, classes: int, seed: int
) -> None:
    student, _, _ = random_logits(batch, classes, seed)
    torch.testing.assert_close(
        standardise_logits(student), authors_normalize(student), rtol=RTOL, atol=0
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize(("batch", "classes", "seed"), [(16, 5, 3), (32, 100, 4)])
def test_standardised_kd_equals_the_authors_with_logit_stand(
    temperature: float, batch: int, classes: int, seed: int
) -> None:
    """Their CIFAR-100 setting: CE weight 0.1, KD weight 9, base temperature 2; ours at α = 0.1
    carries 0.9 on the KD term, so the KD term is compared per unit weight."""
    student, teacher, labels = random_logits(batch, classes, seed)
    method = METHODS.get("kd")({"alpha": 0.1, "temperature": temperature, STANDARDISE: True})
    terms = logit_terms(method, student, teacher, labels)
    ours = terms["kd"] / 0.9
    torch.testing.assert_close(
        ours, authors_standardised_kd(student, teacher, temperature), rtol=RTOL, atol=0
    )
    # Cross-entropy reads the raw logits, as theirs does.
    torch.testing.assert_close(
        terms["ce"], 0.1 * F.cross_entropy(student, labels), rtol=RTOL, atol=0
    )


def test_standardisation_makes_the_teacher_term_blind_to_the_logits_scale_and_shift() -> None:
    """What the switch is for: a student whose logits are the teacher's, affinely rescaled, has a
    positive KD term without the switch and none with it."""
    _, teacher, labels = random_logits(32, 10, 5)
    student = 0.2 * teacher + 3.0
    plain = logit_terms(METHODS.get("kd")(), student, teacher, labels)["kd"]
    switched = METHODS.get("kd")({STANDARDISE: True})
    standardised = logit_terms(switched, student, teacher, labels)["kd"]
    assert plain > 0.1
    assert standardised.abs() < 1e-10


@pytest.fixture(scope="module")
def ctx() -> TrainContext:
    """A real tabular training context of six classes, for methods whose loss reads one."""
    rng = np.random.default_rng(0)
    split = Split(rng.random((12, 4), dtype=np.float32), np.arange(12) % 6)
    bundle = DatasetBundle("random", "0", "tabular", split, split, split, tuple("abcdef"))
    student = Architecture("mlp", (("width", 8), ("depth", 1)))
    return TrainContext(bundle, None, TrainBudget(4, 4, 1e-3), student, torch.device("cpu"), 0)


def prepared(name: str, params: dict, ctx: TrainContext) -> Method:
    """The method as the training loop prepares it before its first `loss` (trained modules made)."""
    method = METHODS.get(name)(params)
    method.trainable_modules(method.build_student(ctx), ctx)
    return method


@pytest.mark.parametrize("name", [n for n in METHODS.names() if METHODS.get(n).standardisable])
def test_every_standardisable_method_reads_the_switch(name: str, ctx: TrainContext) -> None:
    """Each switchable method's teacher terms change with the switch, and its CE does not."""
    student, teacher, labels = random_logits(16, 6, 7)
    batch = Batch(torch.zeros(16, 4, dtype=torch.float64), labels, torch.arange(16))

    def terms(params: dict) -> dict[str, torch.Tensor]:
        method = prepared(name, params, ctx)
        return method.loss(batch, ModelOutput(student), ModelOutput(teacher), ctx)

    plain, switched = terms({}), terms({STANDARDISE: True})
    assert plain.keys() == switched.keys()
    changed = [key for key in plain if not torch.allclose(plain[key], switched[key])]
    assert changed and "ce" not in changed, (name, changed)


# --- the switch and the preset in plans -----------------------------------------------------


def _only(plan, dataset: str = "wine", seed: int = 0):
    return {run.variant: run for run in plan.runs if run.dataset == dataset and run.seed == seed}


def test_the_switch_is_a_variant_of_its_own_and_leaves_plain_runs_unchanged() -> None:
    plain = make_plan(Selection(profile="smoke", datasets=("wine",), methods=("kd",)))
    switched = make_plan(
        Selection(
            profile="smoke", datasets=("wine",), methods=("kd",), overrides=("kd.standardise=true",)
        )
    )
    (kd,) = _only(plain).values()
    assert kd.variant == "kd" and STANDARDISE not in dict(kd.params)
    (row,) = _only(switched).values()
    assert row.variant == "kd[standardise=True]"
    assert dict(row.params)[STANDARDISE] is True
    assert row.run_id != kd.run_id


def test_a_method_without_the_switch_refuses_it_by_name() -> None:
    with pytest.raises(BenchError, match="no parameter 'standardise'.*epsilon"):
        make_plan(
            Selection(
                profile="smoke",
                datasets=("wine",),
                methods=("label_smoothing",),
                overrides=("label_smoothing.standardise=true",),
            )
        )


def test_preset_paper_runs_the_authors_values_and_names_rows_by_what_changes() -> None:
    plan = make_plan(
        Selection(
            profile="smoke", datasets=("digits",), methods=("kd", "dkd", "at"), preset="paper"
        )
    )
    rows = _only(plan, "digits")
    assert set(rows) == {"kd[alpha=0.1]", "dkd", "at[beta=2000.0]"}
    assert dict(rows["kd[alpha=0.1]"].params) == {"alpha": 0.1, "temperature": 4.0}
    default_dkd = _only(
        make_plan(Selection(profile="smoke", datasets=("digits",), methods=("dkd",))), "digits"
    )
    assert rows["dkd"].run_id == default_dkd["dkd"].run_id  # paper values already: same runs


def test_set_wins_over_the_preset() -> None:
    plan = make_plan(
        Selection(
            profile="smoke",
            datasets=("wine",),
            methods=("kd",),
            preset="paper",
            overrides=("kd.temperature=2",),
        )
    )
    (row,) = _only(plan).values()
    assert dict(row.params) == {"alpha": 0.1, "temperature": 2.0}
    assert row.variant == "kd[alpha=0.1,temperature=2.0]"


def test_an_unknown_preset_is_named_with_the_known_ones() -> None:
    with pytest.raises(BenchError, match="--preset 'authors'.*paper"):
        preset_overrides("authors", ["kd"], from_registries())
    assert set(PRESETS) == {"paper"}


@pytest.mark.parametrize("name", METHODS.names())
def test_paper_defaults_are_parameters_with_the_defaults_types(name: str) -> None:
    cls = METHODS.get(name)
    for key, value in cls.paper_defaults.items():
        assert key in cls.defaults
        assert type(value) is type(cls.defaults[key]), (name, key)


def test_registration_refuses_paper_defaults_that_are_not_parameters(monkeypatch) -> None:
    monkeypatch.setattr("bench.train.method.METHODS", Registry("method"))

    class Stray(Method):
        family = "logit"
        defaults = {"alpha": 0.5}
        paper_defaults = {"alpha": 0.1, "beta": 3.0}

    with pytest.raises(ValueError, match=r"paper_defaults or choices name \['beta'\]"):
        register_method("stray")(Stray)


def test_registration_refuses_defaults_outside_their_choices(monkeypatch) -> None:
    monkeypatch.setattr("bench.train.method.METHODS", Registry("method"))

    class Outside(Method):
        defaults = {"layer": "middle"}
        paper_defaults = {"layer": "first"}
        choices = {"layer": ("middle", "last")}

    with pytest.raises(BenchError, match="outside.layer='first': valid values are middle, last"):
        register_method("outside")(Outside)


def test_the_cli_runs_a_preset_and_lists_it(cli, tmp_path) -> None:
    listing = cli("list", "methods")
    assert listing.code == 0
    assert "--preset paper: alpha=0.1" in listing.out
    result = cli(
        "run", "--profile", "smoke", "--dataset", "wine", "--method", "kd",
        "--preset", "paper", "--results", str(tmp_path),
    )  # fmt: skip
    assert result.code == 0, result.err
    assert (tmp_path / "runs/smoke/wine/kd[alpha=0.1]/seed0.json").is_file()


def test_an_override_equal_to_the_default_keeps_the_plain_row() -> None:
    """`--set kd.standardise=false`, or `--preset paper --set kd.alpha=0.5`, compute plain `kd`:
    the same row and run ids, so its finished runs are reused rather than repeated."""
    plain = _only(make_plan(Selection(profile="smoke", datasets=("wine",), methods=("kd",))))
    for preset, overrides in ((None, ("kd.standardise=false",)), ("paper", ("kd.alpha=0.5",))):
        selection = Selection(
            profile="smoke", datasets=("wine",), methods=("kd",), overrides=overrides, preset=preset
        )
        rows = _only(make_plan(selection))
        assert set(rows) == {"kd"}
        assert rows["kd"].run_id == plain["kd"].run_id
