"""The retention pipeline's core (no Prefect): which backups to keep, and pruning the rest.

* :mod:`.policy` — pure: restic ``forget`` semantics (count and within rules, ``min_keep``), durations;
* :mod:`.options` — pure: which policy applies, the ``--keep-*`` options given or the settings;
* :mod:`.prune` — scan the repository once, plan per database (pure), delete data before manifests;
  stale multipart uploads and temporary files.

Its own package, not part of :mod:`charhub_ops.backup`: the prune flow, the ``retention`` and
``backups prune`` commands are its users, and the cleanup pipeline reuses its durations and upload aborts.
"""
