"""Small JPEGs of recent frames, so an alert's evidence can point at a picture of its worst frame."""
from __future__ import annotations

import os
from collections import OrderedDict

from PIL import Image

from monitor.paths import inside
from monitor.source.frames import Frame

KEEP = 250  # recent frames held by default


class ThumbnailStore:
    """Keeps downscaled RGB copies of the last `keep` sampled frames; writes one as JPEG when an alert asks.

    Passed to `AlertEngine(thumbnail=...)`: called with (frame_index, pts_s), returns the JPEG's path,
    or None when the frame is no longer held (an alert whose worst frame is older than `keep` frames).
    """

    def __init__(self, out_dir: str, stream_id: str, keep: int = KEEP, width: int = 256, prefix: str = "frame"):
        self.folder = inside(out_dir, stream_id)
        self.keep, self.width, self.prefix = keep, width, prefix  # prefix "ref": reference pictures, by frame index
        self._frames: OrderedDict[int, object] = OrderedDict()

    def add(self, frame: Frame, index: int | None = None) -> None:
        """Hold `frame` under its own index, or under `index` (a reference frame: the index of the frame it pairs with)."""
        h = max(2, round(frame.height * self.width / frame.width) // 2 * 2)
        self._frames[frame.index if index is None else index] = frame.scaled(self.width, h).rgb()
        while len(self._frames) > self.keep:
            self._frames.popitem(last=False)

    def __call__(self, frame_index: int, pts_s: float | None) -> str | None:
        rgb = self._frames.get(frame_index)
        if rgb is None:
            return None
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"{self.prefix}-{frame_index:08d}.jpg")
        tmp = os.path.join(self.folder, f".{self.prefix}-{frame_index:08d}.jpg.tmp")
        Image.fromarray(rgb).save(tmp, format="JPEG", quality=85)
        os.replace(tmp, path)  # readers never see a half-written picture
        return path
