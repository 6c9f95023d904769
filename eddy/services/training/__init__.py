"""Retraining: alert bursts, outside triggers, and the retrainer that turns them into registered
models."""
