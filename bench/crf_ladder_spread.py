"""Is a shipped model flat anywhere? Per held-out subset, how far its 0–100 score moves over a frame's x264 CRF ladder.

Issue 11's bound: no default model may be flat on any subset, i.e. the std of a frame's scores over its ladder
(pristine and every x264 level of the corpus) must exceed 5 points. Reads the validation split of corpora built by
`vqmon corpus` (their pristine and `h264` items); prints per model and subset that std, averaged over the frames,
and the mean score per level beside VMAF's.

    python bench/crf_ladder_spread.py --corpus DIR [--corpus DIR ...] [--extra liqe:PATH ...]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import registry  # noqa: E402
from models.weights import manifest_entries  # noqa: E402
from monitor.errors import InputError  # noqa: E402
from pipelines.train import evaluate  # noqa: E402

FLAT = 5.0  # issue 11: a frame's score std over its CRF ladder must exceed this


def ladder_items(corpora: list[str]) -> tuple[list, list[dict]]:
    """The validation items on a CRF ladder (pristine and x264) and their corpus rows."""
    items, rows = [], []
    for corpus in corpora:
        val = evaluate.read_corpus(corpus)  # first: a clear error for a folder that is not a corpus
        by_path = {str(Path(corpus) / r["path"]): r for r in pq.read_table(Path(corpus) / "corpus.parquet").to_pylist()}
        for it in val:
            row = by_path.get(str(it.path))
            if row and row["distortion"] in ("pristine", "h264"):
                items.append(it)
                rows.append(row)
    return items, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", action="append", required=True, help="a corpus folder (repeatable)")
    ap.add_argument("--extra", nargs="*", default=[], help="NAME:PATH weights to check beside the shipped ones")
    args = ap.parse_args()
    try:
        items, rows = ladder_items(args.corpus)
    except InputError as e:
        sys.exit(str(e))
    if not rows:
        sys.exit(f"{', '.join(args.corpus)}: no validation items on a CRF ladder (pristine and h264)")
    models = [(f"{e['name']}-{e['variant']} {e['version']}", e["name"], "default") for e in manifest_entries()]
    models += [(spec, *spec.split(":", 1)) for spec in args.extra]
    subsets = sorted({r["subset"] for r in rows})
    crfs = sorted({r["param"] for r in rows if r["distortion"] == "h264"})
    table = Table(title=f"Per-frame score std over pristine + x264 CRF {'/'.join(f'{c:g}' for c in crfs)} "
                        f"(flat: ≤ {FLAT:g})")
    for col in ("model", "subset", "frames", "std per frame", "mean per level (pristine, then the subset's CRFs)"):
        table.add_column(col)

    def add(label: str, scores: np.ndarray) -> None:
        for subset in subsets:
            frames, levels = defaultdict(list), defaultdict(list)
            for r, s in zip(rows, scores):
                if r["subset"] == subset:
                    frames[r["source"]].append(s)
                    levels[r["param"]].append(s)
            std = float(np.mean([np.std(v) for v in frames.values() if len(v) > 1]))
            means = " / ".join(f"{np.mean(levels[k]):.1f}" for k in sorted(levels))
            table.add_row(label, subset, str(len(frames)), f"{std:.1f}" + (" FLAT" if std <= FLAT else ""), means)

    add("VMAF (teacher)", np.array([r["vmaf"] for r in rows], dtype=float))
    for label, name, weights in models:
        model = registry.create(name, weights=weights)
        add(label, model.normalise(torch.from_numpy(evaluate.predict(model, items))).numpy())
    Console().print(table)


if __name__ == "__main__":
    main()
