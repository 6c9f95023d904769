"""Real-time predictions: the predictor process, its pure scoring core, the answer cache and the
client."""
