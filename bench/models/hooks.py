"""Intermediate activations through forward hooks named by module path (as torchdistill does)."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import torch
from torch import nn

from bench.core.errors import BenchError


class FeatureHooks:
    """Context manager capturing the outputs of named submodules on every forward pass.

    `features` maps each module path to its latest output. Paths are checked up front so that a
    typo fails with the list of valid names instead of a silently missing feature.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        valid = dict(model.named_modules())
        for layer in layers:
            if layer not in valid:
                names = ", ".join(n for n in valid if n)
                raise BenchError(f"no layer {layer!r} in {type(model).__name__}; layers: {names}")
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [valid[layer].register_forward_hook(self._saver(layer)) for layer in layers]

    def _saver(self, layer: str):
        def save(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            self.features[layer] = output

        return save

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> FeatureHooks:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()
