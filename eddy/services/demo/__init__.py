"""``eddy demo``: the whole loop on a stream with a known drift, against baselines."""
