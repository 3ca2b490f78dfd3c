"""Alert rules, their detectors and the engine that turns scores and windows into alert events."""
