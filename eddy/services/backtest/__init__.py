"""Backtests: a range of history replayed under candidate retrain policies."""
