"""Eddy's one settings object, and the per-component configs built from it."""
