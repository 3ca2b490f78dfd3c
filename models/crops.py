"""Frame protocols' crop geometry in one place: where the 224 crops of a frame go, for every model.

NEMG and GSN take a rows×cols grid corner to corner (`grid_crops`), LIQE-lite the same grid as
positions (`grid_positions`), LIQE-paper the published unfold positions (`paper_positions`),
MFENet one crop centred in each cell of a grid fitted to the aspect ratio (`centred_grid`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CROP = 224


def spread(extent: int, size: int, count: int) -> list[int]:
    """`count` crop offsets evenly spaced from 0 to extent − size (centred when count is 1)."""
    if count == 1:
        return [(extent - size) // 2]
    return [round(i * (extent - size) / (count - 1)) for i in range(count)]


def grid_crops(frames: torch.Tensor, size: int, rows: int, cols: int) -> torch.Tensor:
    """N×3×H×W → (N·rows·cols)×3×size×size, frame-major; frames with a side under `size` are upscaled first.

    Channels-last frames give channels-last crops (the layout CPU and CUDA convolutions run fastest in).
    """
    h, w = frames.shape[-2:]
    if min(h, w) < size:
        scale = size / min(h, w)
        frames = F.interpolate(frames, size=(max(size, round(h * scale)), max(size, round(w * scale))),
                               mode="bilinear", align_corners=False)
        h, w = frames.shape[-2:]
    crops = [frames[:, :, t:t + size, l:l + size] for t in spread(h, size, rows) for l in spread(w, size, cols)]
    out = torch.stack(crops, dim=1).flatten(0, 1)
    if frames.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def unfold_positions(h: int, w: int, step: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of every 224 crop at `step`, row-major, as `Tensor.unfold` orders them."""
    return [(y, x) for y in range(0, h - CROP + 1, step) for x in range(0, w - CROP + 1, step)]


def paper_positions(h: int, w: int, count: int = 15, step: int | None = None) -> list[tuple[int, int]]:
    """LIQE's test crops: unfold positions k·⌊N/count⌋; stride 48 if H or W ≥ 1024, else 32."""
    if step is None:
        step = 48 if max(h, w) >= 1024 else 32
    grid = unfold_positions(h, w, step)
    return grid[:: max(1, len(grid) // count)][:count]


def grid_positions(h: int, w: int, rows: int, cols: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of a rows×cols grid of 224 crops spread evenly from edge to edge (duplicates dropped)."""
    return list(dict.fromkeys((y, x) for y in spread(h, CROP, rows) for x in spread(w, CROP, cols)))


def centred_grid(h: int, w: int, n_crops: int) -> tuple[list[int], list[int]]:
    """Top and left offsets of the crops: one crop centred in each cell of a rows×cols grid (decision 12)."""
    rows = max(1, round(math.sqrt(n_crops * h / w)))
    cols = max(1, round(n_crops / rows))

    def centred(size: int, cells: int) -> list[int]:
        offsets = (min(max(round((i + 0.5) * size / cells) - CROP // 2, 0), size - CROP) for i in range(cells))
        return list(dict.fromkeys(offsets))  # clipping can repeat an offset on a small side: keep each once

    return centred(h, rows), centred(w, cols)
