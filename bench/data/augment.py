"""The CIFAR recipe's augmentation, done on the device in batches: random crop and horizontal flip.

Torchvision's `RandomCrop(32, padding=4)` and `RandomHorizontalFlip()` transform one image at a
time on the CPU, in data-loader workers; here a whole batch is cropped and flipped where it lies
(on a GPU: no transfer, no workers), with offsets and flips drawn from the run's seeded
generator, so a run augments identically every time.
"""

from __future__ import annotations

import torch


def crop_and_flip(
    x: torch.Tensor, padding: int, generator: torch.Generator, fill: torch.Tensor | None = None
) -> torch.Tensor:
    """Each image of `x` (N, C, H, W) padded by `padding` on every side, cropped back to H×W at
    a random offset, then flipped left-right with probability ½.

    The padding takes the value `fill` per channel (C values; zeros when None): a dataset stored
    standardised passes the value black takes after its standardisation, so that padding means
    what the recipe's zero-padding of raw pixels means. Offsets and flips are drawn on the CPU
    from `generator` (the same numbers whatever the device).
    """
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).to(x.device)
    flips = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = x.new_zeros(n, c, h + 2 * padding, w + 2 * padding)
    if fill is not None:
        padded += fill.to(x).view(1, c, 1, 1)
    padded[:, :, padding : padding + h, padding : padding + w] = x
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # (N, W)
    cropped = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    cropped = cropped.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    return torch.where(flips[:, None, None, None], cropped.flip(3), cropped)


def black_fill(extras: dict[str, object]) -> torch.Tensor | None:
    """The value of a black pixel in a bundle stored standardised (`extras["normalisation"]`,
    per-channel mean and std), or None for a bundle in raw [0, 1] intensities."""
    stats = extras.get("normalisation")
    if not isinstance(stats, dict):
        return None
    mean = torch.tensor(stats["mean"], dtype=torch.float32)
    return -mean / torch.tensor(stats["std"], dtype=torch.float32)
