"""The migration pipeline's core (no Prefect): Prisma's ledger, the plan, the runner, the lint.

* :mod:`.plan` — pure: applied / pending / failed / drift from the files and the ledger rows;
* :mod:`.ledger` — ``_prisma_migrations`` exactly as Prisma writes it, our history in schema ``charhub_ops``;
* :mod:`.runner` — the advisory lock, one transaction per migration, lock-timeout retries;
* :mod:`.lint` — squawk's findings plus the live size of each table they touch, classified by a pure policy;
* :mod:`.sqltext` — splitting statements and naming their table (for reports, not for linting).
"""
