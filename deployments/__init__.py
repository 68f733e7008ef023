"""Deployments: ``prefect.yaml`` is the single source; :mod:`deployments.serve` serves it without a worker."""
