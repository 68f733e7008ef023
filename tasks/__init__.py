"""Prefect tasks, thin and typed, grouped by the system they touch; they call core (charhub_ops)."""
