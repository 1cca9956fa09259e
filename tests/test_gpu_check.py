"""`benchmarks/gpu_check.sh`, the GPU track's device check, run end to end in its CPU dry run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


@pytest.mark.slow
def test_the_dry_run_checks_every_step_on_the_cpu(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out", str(summary_path), "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["mode"] == "dry-run (CPU)" and summary["ok"]
    steps = summary["steps"]
    assert list(steps) == ["cuda_tests", "training", "step_ratio", "ray"]
    assert all(step["ok"] and step["error"] is None for step in steps.values())

    counts = steps["cuda_tests"]["figures"]
    assert counts.get("skipped", 0) >= 25 and "failed" not in counts  # every one found, none run

    training = steps["training"]["figures"]
    assert training["dataset"] == "gpu_check_shapes" and training["device"] == "cpu"
    assert training["pair"] == "resnet56 -> resnet20" and training["epochs"] == 1
    for key in ("teacher_accuracy", "student_accuracy_best_validation_epoch",
                "student_accuracy_last_epoch"):  # fmt: skip
        assert 0.0 <= training[key] <= 1.0
    assert training["student_train_images_per_second"] > 0

    step = steps["step_ratio"]["figures"]
    assert step["device"] == "cpu" and step["images_per_epoch"] == 32
    assert step["step_ratio"] > 0 and step["images_per_second_harness"] > 0

    assert steps["ray"]["figures"]["device"] == "cpu"
    assert 0.0 <= steps["ray"]["figures"]["accuracy"] <= 1.0
    # Each step's output is kept beside the results.
    assert all(Path(step["log"]).is_file() for step in steps.values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_without_a_gpu_the_check_says_to_use_the_dry_run(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(tmp_path / "summary.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "torch sees no CUDA device here; use --dry-run" in done.stderr
    assert not (tmp_path / "summary.json").exists()


def test_a_step_that_overruns_is_stopped_with_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its process group is killed: a Ray daemon or a compile worker would outlive the step."""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", check)  # dataclasses look their module up
    spec.loader.exec_module(check)
    marker = tmp_path / "child.pid"
    command = ["bash", "-c", f"sleep 60 & echo $! > {marker}; echo started; wait"]
    step = check.Step("overrun")
    with pytest.raises(RuntimeError, match="did not finish within 1 s"):
        check.run_step(step, command, dict(os.environ), 1, tmp_path / "overrun.log")
    assert 1 <= step.seconds < 30
    assert (tmp_path / "overrun.log").read_text() == "started\n"
    child = int(marker.read_text())
    time.sleep(0.2)
    assert (
        not Path(f"/proc/{child}").exists()
        or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    )
