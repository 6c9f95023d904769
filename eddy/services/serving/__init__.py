"""Real-time predictions: the predictor process, its pure answering step and scoring core, the
request and shadow logs, the answer cache and the client."""
