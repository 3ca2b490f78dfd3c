"""The contract every quality model follows, so the monitor can score frames without knowing which model it holds.

A model takes whole decoded frames (N×3×H×W float RGB in [0, 1], on the model's device) and
returns one native-scale score per frame. How a frame becomes crops (the *frame protocol*) is
the model's own business and is described in its row of the model table (`models.table`). The 0–100 "higher is
better" score of the records comes from `normalise`.
"""
from __future__ import annotations

import torch
from torch import nn

from models.table import ModelInfo


class QualityModel(nn.Module):
    """Base class: subclasses set `info`, implement `forward` and, where crops are not simply averaged, `score_frames`."""

    info: ModelInfo
    extra_labels: dict[str, tuple[str, ...]] = {}  # names of the entries of score_frames' per-frame distributions

    def __init__(self) -> None:
        super().__init__()
        # sha256 of the quality weights loaded into this instance; None means untrained (ImageNet
        # backbone at most) and every record it produces says so.
        self.weights_sha256: str | None = None

    @property
    def trained(self) -> bool:
        return self.weights_sha256 is not None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def fold(self) -> "QualityModel":
        """Rewrite training-time layers into their inference equivalents, in place (GSN's CDC); most models have none."""
        return self

    def crops(self, frames: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Frame protocol: N×3×H×W RGB [0,1] → (N·P)×3×h×w model input (normalised), and P."""
        raise NotImplementedError

    uses_ref_motion = False  # whether score_frames reads `ref_motion` (pairers then measure it)

    def score_frames(self, frames: torch.Tensor, refs: torch.Tensor | None = None,
                     ref_motion: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Score whole frames; returns {"quality": N native scores, ...optional per-frame extras}.

        `ref_motion` (FR): the reference's VMAF motion at each frame (`monitor.source.align.ReferenceMotion`;
        0 for stills), read by models with `uses_ref_motion`. Default: apply the frame protocol, run
        `forward` on all crops, average per frame.
        """
        x, p = self.crops(frames)
        if self.info.kind == "FR":
            if refs is None:
                raise ValueError(f"{self.info.name} is a full-reference model: score_frames needs refs")
            r, _ = self.crops(refs)
            per_crop = self(x, r)
        else:
            per_crop = self(x)
        return {"quality": per_crop.float().view(frames.shape[0], p).mean(dim=1)}

    def normalise(self, native: torch.Tensor) -> torch.Tensor:
        """Native score → 0–100, higher is better (linear over the native range, clamped)."""
        lo, hi = self.info.native_range
        s = (native - lo) / (hi - lo)
        if not self.info.higher_is_better:
            s = 1.0 - s
        return (100.0 * s).clamp(0.0, 100.0)
