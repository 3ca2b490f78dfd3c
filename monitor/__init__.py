"""vqmon's runtime core (no Ray): sources, scoring, windows, alerts, sinks, views."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vqmon")
except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
    __version__ = "unknown"
