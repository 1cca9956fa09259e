"""Provenance of a run: library versions, device, processor and the code revision."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import torch

import bench
from bench.core.kernels import kernel_settings

LIBRARIES = ("torch", "captum", "quantus", "lightgbm", "numpy", "scikit-learn", "openml")


def resolve_device(requested: str) -> torch.device:
    """`auto` is CUDA when present, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        from bench.core.errors import BenchError

        raise BenchError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(requested)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@cache
def _git_revision() -> str | None:
    source = Path(bench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "bench": bench.__version__,
        "git_revision": _git_revision(),
        "versions": {name: _version(name) for name in LIBRARIES},
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": _processor(),
        "torch_threads": torch.get_num_threads(),
        # The kernels asked for (`bench.core.kernels`) and the ones torch runs.
        "cpu_kernels": {**kernel_settings(), "torch": torch.backends.cpu.get_cpu_capability()},
    }
