"""The backup pipeline's core (no Prefect): a consistent streamed dump, its manifest, the repository catalog.

* :mod:`.engine` — preflight, ``pg_dump -Fc`` → zstd → age → SHA-256 → storage, globals, building and
  writing the manifest (written last);
* :mod:`.manifest` — the manifest model and the repository layout (``<db>/<backup_id>/...``, ids, keys);
* :mod:`.catalog` — reading the repository: which backups exist (those with a manifest), newest first,
  verification records, the summary and the size-anomaly check.
"""
