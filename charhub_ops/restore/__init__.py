"""The restore pipeline's core (no Prefect): a backup restored into a NEW database, checked, then swapped in.

* :mod:`.engine` — pick a backup, roles from the globals, create the database with the dump's locale,
  check the copy against the manifest (row counts, hashes);
* :mod:`.datapath` — the data path: GET → SHA-256 → age → zstd → pg_restore, streamed or through a
  checked work file (``pg_restore -j N``);
* :mod:`.swap` — the guarded swap into the live name and the application containers around it; every
  step has an exact inverse, no database is ever dropped.
"""
