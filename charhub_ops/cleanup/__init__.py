"""The cleanup pipeline's core (no Prefect): rows, object storage and the Docker host.

* :mod:`.policy` — the policy file's model, the safe ``where`` vocabulary, checks against the catalog;
* :mod:`.schema` — the catalog: columns, key, indexes, inheritance, and the whole foreign-key graph a delete reaches;
* :mod:`.batches` — pure: batch size after timeouts, when a run stops;
* :mod:`.rows` — the batched deleter, exact counts, the cursor in ``charhub_ops.cleanup_cursors``, VACUUM;
* :mod:`.run` — row retention end to end and its JSON;
* :mod:`.media_refs` — pure: which media keys a column value references; the batched, streamed lookup;
* :mod:`.orphans` — media objects no row of the prefix's own database references (grace period, cap,
  sanity stop, re-check before acting, quarantine);
* :mod:`.docker_host` — dangling images, old stopped containers, build cache; never volumes;
* :mod:`.prefect_runs` — pure: which flow runs of our deployments have expired (terminal, older than the period;
  failed and crashed ones kept longer) and the predicate the server repeats when it deletes them;
* :mod:`.prefect_vacuum` — pure: what the Prefect server's own ``db_vacuum`` deletes, from its settings.
"""
