"""Kafka and Redis clients, topic names and layout, consumer groups: the only way in and out."""
