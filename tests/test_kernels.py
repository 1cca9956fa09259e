"""The command line pins torch, oneDNN and MKL to their AVX2 kernels (`bench.core.kernels`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.core.kernels import NATIVE_KERNELS_ENV, PINNED_KERNELS, kernel_settings, pin_cpu_kernels


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*PINNED_KERNELS, NATIVE_KERNELS_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_pinning_asks_for_avx2_and_never_overrides_the_user(clean_environment) -> None:
    clean_environment.setenv("MKL_CBWR", "COMPATIBLE")
    pin_cpu_kernels()
    assert kernel_settings() == {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_CBWR": "COMPATIBLE",
    }


def test_native_kernels_are_an_explicit_opt_out(clean_environment) -> None:
    clean_environment.setenv(NATIVE_KERNELS_ENV, "1")
    pin_cpu_kernels()
    assert set(kernel_settings().values()) == {None}


def test_torch_imported_after_pinning_runs_its_avx2_kernels(clean_environment) -> None:
    code = (
        "from bench.core.kernels import pin_cpu_kernels; pin_cpu_kernels(); import torch; "
        "print(torch.backends.cpu.get_cpu_capability())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() in {"AVX2", "DEFAULT"}  # DEFAULT: a processor without AVX2
