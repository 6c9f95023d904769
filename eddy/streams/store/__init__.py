"""What Eddy keeps: the online feature store in Redis, feature snapshots, sealed artifacts."""
