"""`benchmarks/compute_floor.py`: the FLOPs it counts, and its table on real records."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.results.folder import ResultsFolder


def records_of(results: Path, method: str) -> list:
    return [
        r
        for r in ResultsFolder(results).iter_records("smoke")
        if r.role == "student" and r.method["name"] == method
    ]


SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compute_floor.py"


@pytest.fixture(scope="module")
def floor_script():
    spec = importlib.util.spec_from_file_location("compute_floor", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["compute_floor"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["compute_floor"]


def test_a_linear_layer_costs_two_flops_per_weight_forward_and_twice_that_backward(
    floor_script,
) -> None:
    layer, batch = nn.Linear(10, 5, bias=False), torch.randn(4, 10, requires_grad=True)
    forward = 2 * 4 * 10 * 5
    assert floor_script.flops(layer, batch, backward=False) == forward
    # Backward: the weight's gradient and the input's, each a product of the forward's size.
    assert floor_script.flops(layer, batch, backward=True) == 3 * forward


def test_the_table_divides_each_methods_training_time_by_its_floor(
    floor_script, cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("run", "--profile", "smoke", "--dataset", "wine", "--method", "scratch", "kd")
    assert cli(*args, "--results", tmp_path).code == 0
    floor_script.report(tmp_path, "smoke", jobs=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("one thread, 512x512 float32 matmul:")
    header = next(i for i, line in enumerate(lines) if line.startswith("wine: floor"))
    suite = next(i for i, line in enumerate(lines) if line.startswith("the set's training floor"))
    rows = {line.split()[0]: line.split() for line in lines[header + 3 : suite] if line.strip()}
    assert set(rows) == {"kd", "scratch"}
    # The floor is the smoke budget's, counted again here; each ratio is the recorded median
    # training time over the floor's seconds at the printed rate.
    rate = float(lines[0].split(":")[1].split()[0]) * 1e9
    budget = next(ResultsFolder(tmp_path).iter_records("smoke")).budget
    floor = sum(floor_script.floor_of(budget, "wine").values())
    assert f"floor {floor / 1e9:.2f} GFLOP" in lines[header]
    for method, row in rows.items():
        train = float(np.median([r.timings["train"] for r in records_of(tmp_path, method)]))
        assert float(row[2]) == pytest.approx(train, abs=0.01), method
        assert float(row[3]) == pytest.approx(train / (floor / rate), rel=0.05, abs=0.1), method
    # The set's floor: wine's LightGBM teacher adds none, so it is the run floor times the runs;
    # beside it the recorded training seconds of every student and teacher.
    wine = lines[suite + 2].split()
    students = records_of(tmp_path, "kd") + records_of(tmp_path, "scratch")
    assert wine[0] == "wine"
    assert float(wine[1]) == pytest.approx(len(students) * floor / rate, abs=0.05)
    recorded = [
        r.timings["train"]
        for r in ResultsFolder(tmp_path).iter_records("smoke")
        if r.role in ("student", "teacher") and r.status == "ok"
    ]
    assert float(wine[3]) == pytest.approx(sum(recorded), abs=0.05)
    assert lines[suite + 3].strip().endswith("on 2 processes, before scoring")
    with pytest.raises(SystemExit, match="no finished student runs of profile 'default'"):
        floor_script.report(tmp_path, "default", jobs=2)


def test_the_sets_floor_is_shared_by_the_processes_and_ranked_by_share(
    floor_script, capsys: pytest.CaptureFixture[str]
) -> None:
    floor_script.print_suite_floor({"small": (100.0, 50.0), "large": (500.0, 1500.0)}, jobs=2)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines[3:5]] == [
        ["large", "500.0", "83%"],
        ["small", "100.0", "17%"],
    ]
    assert lines[5].strip() == (
        "total 600 CPU-s: at least 5.0 min of wall time on 2 processes, before scoring"
    )


def test_a_network_teachers_floor_grows_with_its_epochs_and_a_forests_or_a_loaded_ones_is_none(
    floor_script,
) -> None:
    from bench.core.registry import load_builtins
    from bench.plan.profiles import PROFILES

    load_builtins()
    budget = PROFILES.get("smoke").budget("digits", "image").as_dict()
    once = {**budget, "teacher_training": {**budget["teacher_training"], "epochs": 1}}
    thrice = {**budget, "teacher_training": {**budget["teacher_training"], "epochs": 3}}
    assert floor_script.teacher_floor(once, "digits") > 0
    assert floor_script.teacher_floor(thrice, "digits") == 3 * floor_script.teacher_floor(
        once, "digits"
    )
    assert floor_script.teacher_floor({**budget, "teacher_network": None}, "digits") == 0.0
    # Published weights are not trained here.
    loaded = PROFILES.get("real").budget("digits_28px", "image").as_dict()
    assert floor_script.teacher_floor(loaded, "digits_28px") == 0.0


def test_a_methods_own_floor_counts_its_extra_terms_and_scales_with_the_epochs(
    floor_script, cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.data.bundle import DATASETS, DatasetLoaderOptions

    methods = ("crd", "fitnet", "scratch")
    args = ("run", "--profile", "smoke", "--dataset", "digits", "--method", *methods)
    assert cli(*args, "--results", tmp_path).code == 0
    (crd, *_), (fitnet, *_), (scratch, *_) = (records_of(tmp_path, m) for m in methods)
    bundle = DATASETS.get("digits").load(DatasetLoaderOptions())
    standard = sum(floor_script.floor_of(scratch.budget, "digits").values())
    # Scratch does what the standard floor counts (and a last test pass): counted by running it.
    own = floor_script.method_floor(scratch, bundle)
    assert own == pytest.approx(standard, rel=0.03)
    # FitNets adds its regressor and the teacher's hint features.
    assert floor_script.method_floor(fitnet, bundle) > 1.02 * own
    # Twice the epochs: twice the per-epoch work, the once-per-run work (teacher outputs) kept.
    training = scratch.budget["student_training"]
    doubled = {**training, "epochs": 2 * training["epochs"], "lr_milestones": []}
    longer = replace(scratch, budget={**scratch.budget, "student_training": doubled})
    once = floor_script.floor_of(scratch.budget, "digits")["teacher outputs"]
    assert floor_script.method_floor(longer, bundle) == pytest.approx(2 * own - once, rel=0.03)

    # CRD scores each sample against a bank of every training sample: its work per sample grows
    # with the set, which is why the floor is taken to full size through several slices.
    def per_sample(record, n: int) -> float:
        return floor_script.counted_fit(record, floor_script.sliced(bundle, n), 1) / n

    assert per_sample(crd, 256) > 1.05 * per_sample(crd, 128)
    assert per_sample(scratch, 256) == pytest.approx(per_sample(scratch, 128), rel=0.01)
    floor_script.report(tmp_path, "smoke", jobs=2, own=True)
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("digits: floor"))
    assert lines[header + 2].split()[-4:] == ["own", "GFLOP", "own", "ratio"]
    _, fitnet_row, scratch_row = (lines[header + 3 + i].split() for i in range(3))
    assert (fitnet_row[0], scratch_row[0]) == ("fitnet", "scratch")
    assert float(scratch_row[5]) == pytest.approx(own / 1e9, abs=0.06)


def test_a_count_at_full_size_follows_a_constant_a_linear_and_a_quadratic_term(
    floor_script,
) -> None:
    # A memory bank of every sample (each sample's work grows with the set: CRD's scores) and a
    # probe done once whatever the size (CRD's feature shapes).
    def cost(n: int) -> float:
        return 5e6 + 7.0 * n + 0.5 * n * n

    sizes = (128, 256, 512)
    full = floor_script.at_size({s: cost(s) for s in sizes}, 9600)
    assert full == pytest.approx(cost(9600), rel=1e-9)
    assert floor_script.at_size({s: 3.0 * s for s in sizes}, 9600) == pytest.approx(3 * 9600)
    assert floor_script.at_size({100: 42.0}, 100) == 42.0  # a set counted whole
    with pytest.raises(ValueError, match="three slice sizes"):
        floor_script.at_size({128: 1.0, 256: 2.0}, 9600)
