"""`vqmon` command line, a thin face over the library: flags become config objects, commands run them.

Exit codes: 0 ok; 1 done, with problems listed on stderr (batch files that failed, now or in an
earlier run; a damaged file scored as far as it decodes; records a sink could not keep); 2 bad
usage or input (one line on stderr); 130 interrupted. Ray is imported only inside the Ray commands (live, status, batch without --local). Nothing in
monitor/, models/ or pipelines/ imports this package.
"""
from __future__ import annotations

import os

# Before torch loads OpenMP (it reads this once): threads that finish a parallel region sleep instead of
# spinning. With the decoder, the signals and other processes on the same few cores, spinning threads
# take the cores from the ones with work left, and every region waits for a descheduled thread: on a
# busy 2-core machine a model ran up to 20× slower (bench/models_throughput.py measures it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from monitor.cli.commands import err  # noqa: E402 - after the OpenMP setting
from monitor.cli.parser import build_parser  # noqa: E402
from monitor.errors import InputError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:
        err.print(f"vqmon: error: {' '.join(str(e).split())}", highlight=False, markup=False)  # one line, never wrapped
        return 2
    except KeyboardInterrupt:
        err.print("vqmon: interrupted", highlight=False)
        return 130

