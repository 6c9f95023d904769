"""Eddy's one settings object, and the learner's and the retrainer's configs built from it (one for every process)."""
