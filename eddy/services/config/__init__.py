"""Eddy's one settings object, and the learner's and the retrainer's configs built from it
(one builder each, for every process)."""
