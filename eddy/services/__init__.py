"""The control plane and the process shells: config, registry, training, promotion, serving,
operations."""
