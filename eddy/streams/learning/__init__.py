"""Online learning: River models by name, the prequential learner, its metrics and slices."""
