"""The ``eddy`` command."""
