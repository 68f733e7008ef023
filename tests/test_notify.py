"""Secrets never leave in a notification: scrub() removes every secret value the settings know of."""

from __future__ import annotations

from charhub_ops.settings import load_settings
from tasks.notify import scrub


def test_scrub_removes_url_password_and_r2_keys():
    settings = load_settings(database_url="postgresql://charhub:p%40ss-W0rd@db:5432/charhub_db?schema=public",
                        r2_access_key_id="AKIA-R2-ID", r2_secret_access_key="r2-secret-value")
    text = ("failed: postgresql://charhub:p%40ss-W0rd@db:5432/charhub_db?schema=public, password p@ss-W0rd, "
            "key AKIA-R2-ID / r2-secret-value")
    clean = scrub(text, settings)
    for secret in ("p%40ss-W0rd", "p@ss-W0rd", "AKIA-R2-ID", "r2-secret-value"):
        assert secret not in clean
    assert clean.startswith("failed: ") and "**********" in clean


def test_scrub_without_secrets_changes_nothing():
    assert scrub("backup failed", load_settings()) == "backup failed"


def test_scrub_removes_the_setup_only_secrets():
    """scratch_url and notify_url (read by `charhub-ops setup` only) are secrets too."""
    settings = load_settings(scratch_url="postgresql://drill:scr4tch@scratch/postgres",
                        notify_url="https://hooks.example.invalid/T0/B0/s3cr3t-hook")
    clean = scrub("setup: postgresql://drill:scr4tch@scratch/postgres https://hooks.example.invalid/T0/B0/s3cr3t-hook",
                  settings)
    assert "scr4tch" not in clean and "s3cr3t-hook" not in clean
