"""The device check of the GPU track, run by `benchmarks/gpu_check.sh`: four steps, each figure
written to one summary file.

1. `cuda_tests`: the tests marked `cuda` (`pytest -m cuda`): every image method trained under the
   recipe in bfloat16, crop-and-flip on the device, a compiled student, mixed precision.
2. `training`: the `gpu-check` profile (`benchmarks/gpu_check_profile.py`: the cifar100 recipe
   and its resnet32x4 → resnet8x4 pair, scaled to a few epochs) trains a teacher and a kd
   student through `python -m bench run` on `cifar100` when `--data-dir` holds it, otherwise on
   `concept_shapes` (3x32x32 too); test accuracy (best-validation and last epoch), training
   images per second.
3. `step_ratio`: `benchmarks/bench_gpu_step.py`, the harness's training step against a bare
   loop on the same device (target ≥ 0.9), images per second.
4. `ray`: one Ray task asking for a GPU (the smoke profile's digits kd run through the Ray
   executor); the record says which device it ran on.

On a GPU the steps are sized to finish within eight minutes together. `--dry-run` runs the same
steps on the CPU at tiny sizes (one epoch of 64 images of `gpu_check_shapes`, scored on the smoke
profile's budget; the recipe's resnet56 → resnet20 pair, a tenth of resnet32x4's forward cost; a
32-image step benchmark; the Ray task on the CPU): the path is checked end to end and its figures
mean nothing.
A step that fails or overruns is recorded as failed and the check goes on; the exit status is 0
only when every step passed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "benchmarks" / "gpu_check_profile.py"
STEP_BENCHMARK = ROOT / "benchmarks" / "bench_gpu_step.py"
LOG_TAIL = 2000


@dataclass(frozen=True)
class Sizes:
    """What each step spends, and its time limit in seconds."""

    device: str
    environment: dict[str, str]
    limits: dict[str, int]


GPU = Sizes(
    "cuda",
    {"XKD_CHECK_EPOCHS": "10", "XKD_STEP_IMAGES": str(64 * 48), "XKD_STEP_EPOCHS": "2"},
    {"cuda_tests": 100, "training": 230, "step_ratio": 90, "ray": 60},
)
DRY_RUN = Sizes(
    "cpu",
    {
        "XKD_CHECK_EPOCHS": "1",
        "XKD_CHECK_EXPLAIN": "8",
        "XKD_CHECK_SCORING": "smoke",
        "XKD_CHECK_PAIR": "resnet56:resnet20",
        "XKD_STEP_TEACHER": "resnet56",
        "XKD_STEP_STUDENT": "resnet20",
        "XKD_CHECK_IMAGES": "64",
        "XKD_STEP_IMAGES": "32",
        "XKD_STEP_EPOCHS": "1",
        "XKD_STEP_ROUNDS": "1",
    },
    {"cuda_tests": 120, "training": 240, "step_ratio": 180, "ray": 180},
)


@dataclass
class Step:
    name: str
    ok: bool = False
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    log: str | None = None


def run_step(step: Step, command: list[str], env: dict[str, str], limit: int, log: Path) -> str:
    """Run `command`, its output going to `log`; the output, or raise with its tail on failure.

    The command leads a process group of its own, and the whole group is killed when it overruns
    `limit`: Ray's daemons and workers, pytest's and the compiler's children would otherwise
    outlive it and keep the GPU.
    """
    started = time.perf_counter()
    step.log = str(log)
    with log.open("w") as sink:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise RuntimeError(f"did not finish within {limit} s") from None
        finally:
            step.seconds = round(time.perf_counter() - started, 1)
    output = log.read_text(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"exit status {process.returncode}: {output[-LOG_TAIL:]}")
    return output


def pytest_counts(output: str) -> dict[str, int]:
    """`3 passed, 2 skipped in 4.1s` as {"passed": 3, "skipped": 2}."""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error)", output)}


def cuda_test_files() -> list[str]:
    """The test files that mark tests `cuda`: collecting only them saves importing the rest."""
    marked = [p for p in sorted((ROOT / "tests").glob("test_*.py")) if "mark.cuda" in p.read_text()]
    return [str(p) for p in marked]


def cuda_tests(step: Step, env: dict[str, str], sizes: Sizes, work: Path, _: Path | None) -> None:
    command = [sys.executable, "-m", "pytest", "-m", "cuda", *cuda_test_files(), "-q",
               "-p", "no:cacheprovider"]  # fmt: skip
    output = run_step(step, command, env, sizes.limits[step.name], work / "cuda_tests.log")
    step.figures = pytest_counts(output)
    if sizes.device == "cuda" and step.figures.get("skipped"):
        raise RuntimeError(f"{step.figures['skipped']} CUDA tests skipped on a GPU machine")


def has_cifar100(data_dir: Path | None) -> bool:
    """Whether `data_dir` holds cifar100's files or its archive, where its loader looks first
    (the check never downloads: a GPU machine may have no network)."""
    if data_dir is None:
        return False
    from bench.datasets import cifar100

    folders = (data_dir, data_dir / cifar100.FOLDER)
    batches = any(all((f / name).is_file() for name in cifar100.BATCH_FILES) for f in folders)
    return batches or (data_dir / cifar100.ARCHIVE.name).is_file()


def record(results: Path, profile: str, dataset: str, row: str) -> dict[str, Any]:
    path = results / "runs" / profile / dataset.replace(":", "_") / row / "seed0.json"
    return json.loads(path.read_text())


def training(step: Step, env: dict[str, str], sizes: Sizes, work: Path, data: Path | None) -> None:
    if sizes.device == "cpu":
        dataset = "gpu_check_shapes"
    else:
        dataset = "cifar100" if has_cifar100(data) else "concept_shapes"
    results = work / "results"
    command = [
        sys.executable, "-m", "bench", "run", "--plugin", str(PLUGIN), "--profile", "gpu-check",
        "--dataset", dataset, "--method", "kd", "--seeds", "0", "--device", sizes.device,
        "--results", str(results),
    ]  # fmt: skip
    if data is not None:
        command += ["--data-dir", str(data)]
    run_step(step, command, env, sizes.limits[step.name], work / "training.log")
    student = record(results, "gpu-check", dataset, "kd")
    teacher = record(results, "gpu-check", dataset, "teacher")
    if student["status"] != "ok":
        raise RuntimeError(f"the kd run is {student['status']}: {student['error']}")
    epochs = len(student["training"]["history"]["val_accuracy"])
    seen = student["dataset"]["sizes"]["train"] * epochs
    step.figures = {
        "dataset": dataset,
        "pair": f"{teacher['teacher']['kind']} -> {student['budget']['student']['model']}",
        "device": student["environment"]["device"],
        "gpu": student["environment"]["gpu"],
        "epochs": epochs,
        "teacher_accuracy": teacher["metrics"]["accuracy"],
        "teacher_train_seconds": round(teacher["teacher"]["train_seconds"], 1),
        "student_accuracy_best_validation_epoch": student["metrics"]["accuracy"],
        "student_accuracy_last_epoch": student["training"]["last_epoch_test_accuracy"],
        "student_train_seconds": round(student["timings"]["train"], 1),
        "student_score_seconds": round(student["timings"]["score"], 1),
        "student_train_images_per_second": round(seen / student["timings"]["train"], 1),
    }


def step_ratio(step: Step, env: dict[str, str], sizes: Sizes, work: Path, _: Path | None) -> None:
    report = work / "step.json"
    command = [
        sys.executable, "-m", "pytest", str(STEP_BENCHMARK), "--benchmark-only", "-q",
        "-p", "no:cacheprovider", f"--benchmark-json={report}",
    ]  # fmt: skip
    run_step(step, command, env, sizes.limits[step.name], work / "step_ratio.log")
    (benchmark,) = json.loads(report.read_text())["benchmarks"]
    step.figures = benchmark["extra_info"]


def ray(step: Step, env: dict[str, str], sizes: Sizes, work: Path, _: Path | None) -> None:
    results = work / "ray-results"
    command = [
        sys.executable, "-m", "bench", "run", "--executor", "ray", "--profile", "smoke",
        "--dataset", "digits", "--method", "kd", "--seeds", "0", "--device", sizes.device,
        "--results", str(results),
    ]  # fmt: skip
    run_step(step, command, env, sizes.limits[step.name], work / "ray.log")
    student = record(results, "smoke", "digits", "kd")
    if student["status"] != "ok":
        raise RuntimeError(f"the Ray task's run is {student['status']}: {student['error']}")
    step.figures = {
        "device": student["environment"]["device"],
        "gpu": student["environment"]["gpu"],
        "accuracy": student["metrics"]["accuracy"],
    }
    if not student["environment"]["device"].startswith(sizes.device):
        raise RuntimeError(f"the Ray task ran on {student['environment']['device']}")


STEPS = {"cuda_tests": cuda_tests, "training": training, "step_ratio": step_ratio, "ray": ray}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps, tiny, on the CPU")
    parser.add_argument(
        "--out", type=Path, default=Path("gpu_check_summary.json"), help="the summary file"
    )
    parser.add_argument("--data-dir", type=Path, help="where cifar100's files may be")
    parser.add_argument("--work", type=Path, help="folder for results and logs (default: temp)")
    parser.add_argument("--steps", nargs="+", choices=sorted(STEPS), default=list(STEPS))
    args = parser.parse_args(argv)
    sizes = DRY_RUN if args.dry_run else GPU
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            parser.error("torch sees no CUDA device here; use --dry-run to check the path on a CPU")
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **sizes.environment}
    steps = []
    for name in args.steps:
        step = Step(name)
        print(f"[gpu-check] {name} ...", flush=True)
        try:
            STEPS[name](step, env, sizes, work, args.data_dir)
            step.ok = True
        except Exception as exc:  # a failed step is recorded; the others still run
            step.error = f"{type(exc).__name__}: {exc}"
        steps.append(step)
        status = "ok" if step.ok else f"FAILED ({step.error})"
        print(f"[gpu-check] {name}: {status} in {step.seconds} s; {step.figures}", flush=True)
    summary = {
        "mode": "dry-run (CPU)" if args.dry_run else "gpu",
        "ok": all(step.ok for step in steps),
        "total_seconds": round(sum(step.seconds for step in steps), 1),
        "work": str(work),
        "steps": {step.name: vars(step) for step in steps},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"[gpu-check] summary: {args.out} ({'ok' if summary['ok'] else 'FAILED'})")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
