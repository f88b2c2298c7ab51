"""Campaigns: a priority list of sweeps worked within a deadline on whatever device is found,
with periodic snapshots, resumable across windows and machines (issue 13).

``flowdistill campaign run [paper/experiments/campaign.toml] --deadline 9m --snapshot DIR``;
``flowdistill campaign status``; ``flowdistill campaign collect DIR``. Modules: ``plan`` (the
campaign TOML and its queue), ``runner`` (workers, deadline), ``worker`` (the worker process),
``snapshot`` (snapshots and ``--resume-from``), ``report`` (per-model summary), ``cli``.
"""
