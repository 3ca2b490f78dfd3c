"""Frames to per-frame metric values: the cheap signals, quality models (scorers) and libvmaf."""
