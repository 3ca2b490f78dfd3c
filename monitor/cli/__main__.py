"""`python -m monitor.cli`: the same as the `vqmon` script."""
import sys

from monitor.cli import main

sys.exit(main())
