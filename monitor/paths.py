"""Paths built from outside text (a stream id, a file name, a URL) stay inside their root.

Such text becomes one path component by percent-encoding: no separator, no `..`, no leading
dot, no absolute path can survive it, and distinct names stay distinct (and decodable).
"""
from __future__ import annotations

import os
from urllib.parse import quote


def component(name: str) -> str:
    """`name` as a single, visible path component: `../x` → `..%2Fx`, `..` → `%2E.`, `.cfg` → `%2Ecfg`."""
    text = quote(str(name), safe="")
    return "%2E" + text[1:] if text.startswith(".") else text


def inside(root: str, *names: str) -> str:
    """`root` joined with each of `names` as one component: always a path under `root`."""
    return os.path.join(root, *(component(n) for n in names))
