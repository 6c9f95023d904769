"""The streaming worker processes: the feature worker (faust-streaming) and the learner."""
