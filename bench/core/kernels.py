"""Which CPU kernels torch may use, fixed before torch is imported.

torch, oneDNN and MKL pick their kernels by the processor's instruction set at import time, and
their sums are taken in different orders: the same seed then trains a different network on an
AVX-512 Xeon than on an AVX2 EPYC (`reference/default-v2` against `default-v3` differed by up to
0.022 in a digits student's accuracy, FINDINGS N17). The command line therefore asks every library
for its AVX2 path, which every x86-64 server of the last decade has, so that the numbers depend
on the seed and the thread count, not on which of them ran it. It costs about 5 % of a run's time
on an AVX-512 machine (measured on the smoke digits and concept_shapes runs).

`BENCH_NATIVE_KERNELS=1` leaves each library's own choice (faster, not reproducible across
processors); a variable the user set is never overridden. The kernels in force are part of
every record's `environment`.
"""

from __future__ import annotations

import os

NATIVE_KERNELS_ENV = "BENCH_NATIVE_KERNELS"
PINNED_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # convolutions
    "MKL_CBWR": "AVX2",  # matrix products: MKL's conditional numerical reproducibility
}


def pin_cpu_kernels() -> None:
    """Ask for the AVX2 kernels unless the user opted out; call before torch is imported."""
    if os.environ.get(NATIVE_KERNELS_ENV) == "1":
        return
    for name, value in PINNED_KERNELS.items():
        os.environ.setdefault(name, value)


def kernel_settings() -> dict[str, str | None]:
    """The kernel variables as this process sees them (None: the library chooses)."""
    return {name: os.environ.get(name) for name in PINNED_KERNELS}
