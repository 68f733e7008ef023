"""Prefect flows: each reads like a runbook (parameters → plan → preview → act → report)."""
