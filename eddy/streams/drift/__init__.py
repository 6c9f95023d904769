"""Drift: data and prediction drift tests, concept detectors and their watch, alert explanations."""
