"""Operating Eddy: logs, metrics, liveness, health probes, the supervisor, the monitor, topic
tools."""
