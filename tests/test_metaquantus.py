"""MetaQuantus's noise-resilience and adversarial-reactivity tests of the Quantus metrics
(`bench.run.metaquantus`), and how the report's reliability checks read them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bench.cli.main import main
from bench.core.errors import BenchError
from bench.data.bundle import DatasetBundle, Split
from bench.report.reliability import read_metaquantus, reliability_table
from bench.results.folder import ResultsFolder
from bench.results.record import Record
from bench.run.metaquantus import (
    DRAWS,
    PERTURBATIONS,
    metric_tests,
    perturbed_inputs,
    perturbed_network,
)
from bench.run.predictors import StudentPredictor

N = 40


def _scores(level: float, rng: np.random.Generator) -> np.ndarray:
    return level + 0.1 * rng.standard_normal(N)


def _draws(base: dict, shift: float, rng: np.random.Generator, models=("a", "b", "c")) -> list:
    """`DRAWS` draws of every model's scores, each sample moved by `shift` plus small noise."""
    return [
        {m: {"x": base[m]["x"] + shift + 1e-3 * rng.standard_normal(N)} for m in models}
        for _ in range(DRAWS)
    ]


def test_a_metric_that_ignores_noise_and_reacts_to_damage_passes_both_tests() -> None:
    rng = np.random.default_rng(0)
    base = {m: {"x": _scores(level, rng)} for m, level in (("a", 0.9), ("b", 0.5), ("c", 0.1))}
    perturbed = {
        p: _draws(base, 0.0 if p.strength == "minor" else -0.5, rng) for p in PERTURBATIONS
    }
    # The minor draws move every sample by a little noise: the paired test may see it, so only
    # the ranking is asserted there; a shift of 0.5 is always seen.
    result = metric_tests(base, perturbed, "x")
    assert result["nr_rank_kept"] == 1.0
    assert result["ar_scores_changed"] == 1.0 and result["adversarially_reactive"]
    # Scores identical under minor perturbations: resilient on both counts.
    still = {
        p: ([{m: {"x": base[m]["x"].copy()} for m in base}] * DRAWS if p.strength == "minor"
            else perturbed[p])
        for p in PERTURBATIONS
    }  # fmt: skip
    assert metric_tests(base, still, "x")["noise_resilient"]


def test_a_metric_blind_to_damage_or_shaken_by_noise_fails() -> None:
    rng = np.random.default_rng(1)
    base = {m: {"x": _scores(level, rng)} for m, level in (("a", 0.52), ("b", 0.5), ("c", 0.48))}
    blind = {p: [{m: {"x": base[m]["x"].copy()} for m in base}] * DRAWS for p in PERTURBATIONS}
    assert not metric_tests(base, blind, "x")["adversarially_reactive"]
    # Minor noise as large as the gaps between the models reorders them.
    shaken = {
        p: [{m: {"x": base[m]["x"] + 0.3 * rng.standard_normal(N)} for m in base}
            for _ in range(DRAWS)]
        for p in PERTURBATIONS
    }  # fmt: skip
    result = metric_tests(base, shaken, "x")
    assert result["nr_rank_kept"] < 0.8 and not result["noise_resilient"]


def test_a_model_the_perturbation_does_not_apply_to_keeps_its_scores() -> None:
    rng = np.random.default_rng(2)
    base = {m: {"x": _scores(level, rng)} for m, level in (("tree", 0.9), ("b", 0.5))}
    perturbed = {p: _draws(base, -0.5 if p.strength == "disruptive" else 0.0, rng, ("b",))
                 for p in PERTURBATIONS}  # fmt: skip
    result = metric_tests(base, perturbed, "x")
    assert result["ar_scores_changed"] == 1.0  # only the perturbed model is tested


def test_perturbations_scale_weights_and_inputs_and_leave_the_originals() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 3))
    original = [p.detach().clone() for p in module.parameters()]
    model = StudentPredictor(module, torch.device("cpu"), 3)
    minor = perturbed_network(model, 0.001, seed=0, num_classes=3)
    ratios = torch.cat(
        [(q / p).ravel() for p, q in zip(original, minor.module.parameters(), strict=True)]
    )
    assert 0 < (ratios - 1).abs().max() < 0.01
    assert all(torch.equal(p, q) for p, q in zip(original, module.parameters(), strict=True))
    x = np.zeros((50, 4), dtype=np.float32)
    split = Split(x, np.arange(50, dtype=np.int64) % 3)
    bundle = DatasetBundle("toy", "0", "tabular", split, split, split, ("a", "b", "c"))
    noisy = perturbed_inputs(bundle, 5.0, seed=0)
    assert noisy.test.x.dtype == np.float32 and 4 < noisy.test.x.std() < 6
    assert not np.any(bundle.test.x) and noisy.train is bundle.train


def test_the_command_tests_real_models_and_the_report_reads_its_table(tmp_path) -> None:
    results = tmp_path / "results"
    assert main(["run", "--profile", "smoke", "--dataset", "wine", "--method", "scratch", "kd",
                 "--seeds", "0", "--results", str(results)]) == 0  # fmt: skip
    assert main(["metaquantus", "--profile", "smoke", "--dataset", "wine",
                 "--results", str(results)]) == 0  # fmt: skip
    folder = ResultsFolder(results)
    table = read_metaquantus(folder.metaquantus_file)
    assert table is not None and set(table.dataset) == {"wine"}
    assert {"faithfulness_correlation_ig", "deletion_gain_ig"} <= set(table.metric)
    raw = pd.read_csv(folder.metaquantus_file)
    assert (raw.models == "teacher, scratch, kd").all()
    assert raw.note.str.contains("tree teacher").all()
    records = [r for r in folder.iter_records() if isinstance(r, Record)]
    reliability = reliability_table(records, metaquantus=table).set_index("metric")
    tested = reliability.loc["deletion_gain_ig"]
    assert tested.noise_resilient in (True, False) and tested.not_measured == ""
    assert reliability.loc["accuracy", "noise_resilient"] == "n/a"


def test_a_file_that_is_not_a_metaquantus_table_is_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "metaquantus.csv"
    assert read_metaquantus(path) is None
    path.write_text("profile,dataset,metric\nsmoke,wine,x\n")
    with pytest.raises(BenchError, match="columns .* missing"):
        read_metaquantus(path)
    path.write_text(
        "profile,dataset,metric,noise_resilient,adversarially_reactive\nsmoke,wine,x,yes,no\n"
    )
    with pytest.raises(BenchError, match="not True/False"):
        read_metaquantus(path)
