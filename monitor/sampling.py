"""Which decoded frames get scored: every frame, every Nth, or at most X per second of media time."""
from __future__ import annotations

import re
from dataclasses import dataclass

from monitor.errors import InputError


@dataclass
class Sampler:
    every: int = 1  # take every Nth decoded frame
    max_fps: float | None = None  # or: at most this many frames per second of media time

    @classmethod
    def parse(cls, spec: str) -> "Sampler":
        """'all', 'N' or 'every:N' (every Nth frame), 'Xfps' or 'fps:X' (rate cap)."""
        s = spec.strip().lower()
        if s in ("all", "1"):
            return cls()
        if m := re.fullmatch(r"(?:every:)?(\d+)", s):
            if int(m[1]) < 1:
                raise InputError(f"--sample {spec}: N must be at least 1")
            return cls(every=int(m[1]))
        if m := re.fullmatch(r"(?:fps:)?(\d+(?:\.\d+)?)\s*(?:fps)?", s):
            if float(m[1]) <= 0:
                raise InputError(f"--sample {spec}: the fps cap must be positive")
            return cls(max_fps=float(m[1]))
        raise InputError(f"--sample {spec}: expected 'all', N (every Nth frame) or Xfps (rate cap)")

    def __post_init__(self):
        self._next_due: float | None = None

    def take(self, index: int, t: float) -> bool:
        """Decide for the frame at decode position `index` and media time `t` (seconds)."""
        if self.max_fps is None:
            return index % self.every == 0
        period = 1.0 / self.max_fps
        if self._next_due is None or t >= self._next_due - 1e-9:
            # schedule from the due time, not from t, so the rate does not drift; resync after gaps
            base = t if self._next_due is None or t - self._next_due > period else self._next_due
            self._next_due = base + period
            return True
        return False

    def describe(self) -> str:
        return f"≤{self.max_fps:g} fps" if self.max_fps else ("every frame" if self.every == 1 else f"every {self.every}th frame")
