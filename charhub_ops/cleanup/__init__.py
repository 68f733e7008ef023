"""The cleanup pipeline's core (no Prefect): rows, object storage and the Docker host.

* :mod:`.policy` — the policy file's model, the safe ``where`` vocabulary, checks against the catalog;
* :mod:`.schema` — the catalog: columns, key, indexes, inheritance, and the whole foreign-key graph a delete reaches;
* :mod:`.batches` — pure: batch size after timeouts, when a run stops;
* :mod:`.rows` — the batched deleter, exact counts, the cursor in ``charhub_ops.cleanup_cursors``, VACUUM;
* :mod:`.run` — row retention end to end and its JSON;
* :mod:`.orphans` — media objects no row references (grace period, cap, quarantine);
* :mod:`.docker_host` — dangling images, old stopped containers, build cache; never volumes.
"""
