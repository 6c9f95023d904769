"""Per-entity features: declared once, computed the same way for training, serving and replay."""
