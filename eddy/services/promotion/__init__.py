"""Which model serves: the registry's decision rules and the live champion/challenger comparison."""
