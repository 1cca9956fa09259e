"""Per-epoch checkpoints of the training loop: an interrupted run resumes at the epoch it reached.

A run of the real profile trains for minutes (a Fashion-MNIST teacher for longer), and every
process ends with the session that started it. After an epoch (the first to end `EVERY_SECONDS`
after the last save) `TrainContext.fit` keeps all the
state that decides the next epochs: the trained modules, the optimiser, the learning-rate schedule,
the loss scaler, the shuffling generator, torch's and numpy's global generators, the history and the
best epoch so far with its weights. Resuming restores all of it, so on the CPU a resumed run
computes the same numbers as an uninterrupted one (`tests/test_checkpoints.py` checks every
registered method).

A checkpoint is a cache entry: written sealed with its digest (`bench.core.sealed`), read only
after the digest matches, parsed with `torch.load(weights_only=True)`, and used only when it names
the run (or teacher) it is loaded for. Anything else is discarded with a warning and training
starts at epoch 0, so a damaged checkpoint costs time, never a wrong number. The caller removes
the folder once the run's record (or the teacher) is written.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.core.confined import RefusedPath, refuse_links
from bench.core.sealed import DamagedCache, read_sealed, write_sealed

log = logging.getLogger(__name__)

# Raised when what a checkpoint holds changes, so an older file is discarded, never misread.
FORMAT = 1
# Training seconds between two checkpoints. A save writes and fsyncs two files, which costs more
# than a whole epoch of a small table's student: such runs, over in seconds, keep none, and a long
# run loses at most this much work when it is interrupted.
EVERY_SECONDS = 30.0


@dataclass
class EpochCheckpoints:
    """The checkpoints of one run: `fit<i>.pt` in `folder` for the run's i-th call of `fit`.

    `key`: what the state belongs to (a run id, a teacher's key); `root`: the results folder,
    below which no link is followed.
    """

    folder: Path
    key: str
    root: Path
    every_seconds: float = EVERY_SECONDS
    _calls: int = field(default=0, init=False)
    _last_saved: float = field(default_factory=time.monotonic, init=False)

    def due(self) -> bool:
        """Whether `every_seconds` have passed since the last save (or since this run began)."""
        now = time.monotonic()
        if now - self._last_saved < self.every_seconds:
            return False
        self._last_saved = now
        return True

    def next_file(self) -> Path:
        """The file of the next `fit` call (a method may train more than one network)."""
        path = self.folder / f"fit{self._calls}.pt"
        self._calls += 1
        return path

    def load(self, path: Path, device: torch.device) -> dict[str, Any] | None:
        """The state saved at `path` for this run by this torch on this kind of device, or None
        (nothing there, or not usable: another device kind computes other numbers)."""
        try:
            data = read_sealed(path, self.root)
        except DamagedCache as exc:
            log.warning("discarding checkpoint %s: %s", path, exc)
            return None
        if data is None:
            return None
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # any unpickling failure means: start afresh
            log.warning("discarding checkpoint %s: it does not load (%s)", path, exc)
            return None
        if not isinstance(state, dict) or (state.get("key"), state.get("format")) != (
            self.key,
            FORMAT,
        ):
            log.warning("discarding checkpoint %s: it belongs to another run", path)
            return None
        written_by = state.get("written_by")
        if written_by != writer(device):
            log.warning(
                "discarding checkpoint %s: written by %s, resumed by %s",
                path,
                written_by,
                writer(device),
            )
            return None
        return state

    def save(self, path: Path, state: dict[str, Any], device: torch.device) -> None:
        """Keep `state` at `path`; a checkpoint that cannot be written (a full disk, a link on
        the way) costs the resumability of this run, never the run: a warning, and training goes
        on."""
        buffer = io.BytesIO()
        torch.save(
            {**state, "key": self.key, "format": FORMAT, "written_by": writer(device)}, buffer
        )
        try:
            write_sealed(path, buffer.getvalue(), self.root)
        except (OSError, RefusedPath) as exc:
            log.warning("could not keep checkpoint %s (%s); training goes on without it", path, exc)

    def clear(self) -> None:
        """Remove the run's checkpoints (its record or teacher is written), following no link
        below the results folder."""
        if not os.path.lexists(self.folder):
            return
        try:
            refuse_links(self.root, self.folder)
        except RefusedPath as exc:
            log.warning("leaving %s alone: %s", self.folder, exc)
            return
        shutil.rmtree(self.folder, ignore_errors=True)


def writer(device: torch.device) -> str:
    """The torch version and device kind a checkpoint is resumed only by."""
    return f"torch {torch.__version__} on {device.type}"


def global_generators(device: torch.device) -> dict[str, Any]:
    """torch's (and the training GPU's) and numpy's global generator states, as tensors
    `torch.load` reads back safely."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        **({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_rest": [str(kind), int(position), int(has_gauss), float(cached)],
    }


def restore_global_generators(state: dict[str, Any], device: torch.device) -> None:
    kind, position, has_gauss, cached = state["numpy_rest"]
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
