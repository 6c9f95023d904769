"""Eddy: event-driven dynamic training. ``eddy.streams`` is the data plane, ``eddy.services`` the
control plane and the processes."""
