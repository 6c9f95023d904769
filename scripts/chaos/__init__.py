"""Eddy's chaos suite: break a private deployment under load and account for every effect.

``scripts/chaos.py`` is the command; this package holds its parts, each with one job:

- :mod:`chaos.plan`: the modes (short for CI, full for the record), the scenarios and the
  deployment's settings (pure);
- :mod:`chaos.corpus`: the malformed inputs (pure);
- :mod:`chaos.ledger`: what was sent, what the system holds, and the verdict (pure);
- :mod:`chaos.stack`: the private Kafka broker and Redis (``scripts/stack.sh`` on ports
  and a data folder of their own), stopped and started for the faults;
- :mod:`chaos.fleet`: Eddy's services, each under Eddy's own supervisor;
- :mod:`chaos.traffic`: events, labels and prediction requests at a steady rate;
- :mod:`chaos.observe`: the system's real state (Redis, topics, checkpoint, registry, lag);
- :mod:`chaos.faults`: one fault per scenario;
- :mod:`chaos.report`: the table and the figures section of ``docs/reliability.md``;
- :mod:`chaos.run`: the timeline.
"""
