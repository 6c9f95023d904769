"""The data plane: per-message code. It never imports :mod:`eddy.services` (an import-linter
contract checks it)."""
