"""Data quality checks run against the live system: training-serving skew."""
