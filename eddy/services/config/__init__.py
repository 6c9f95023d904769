"""Eddy's one settings object, and the learner's config built from it (one for every process)."""
