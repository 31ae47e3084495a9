"""Windowed drift of the scored stream against the serving model's reference profile.

``stats`` and ``severity`` are pure; ``histogram`` turns a window's rows into mergeable
counts; ``window_state`` keeps those counts in Redis, global across partitions and workers;
``processor`` is the thin faust side; ``serve.run_drift`` runs it as its own app.
"""
