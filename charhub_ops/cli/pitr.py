"""`charhub-ops pitr setup | backup | info | expire`: point-in-time recovery with pgBackRest.

pgBackRest runs where PostgreSQL runs: in ``CHARHUB_OPS_DOCKER_CONTAINER`` through the Docker API when it is
set, else on this host as the data directory's owner. Every failure is one red line naming what to fix
(``run_guarded``). ``app`` is the Typer group (registered as ``pitr`` in ``charhub_ops.cli``);
``charhub_ops.cli.pitr_restore`` adds ``restore``, ``verify`` and ``recover-table`` to it, imported on the
last line of this module.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from charhub_ops.cli.app import JsonOpt, err, print_json, run_guarded

__all__ = ["app", "setup", "backup", "info", "expire", "connect_from_settings"]

app = typer.Typer(help="Point-in-time recovery with pgBackRest: WAL archiving and physical backups.",
                  no_args_is_help=True)

TypeOpt = Annotated[str, typer.Option("--type", help="full | diff (since the last full) | incr (since the last "
                                                     "backup).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would expire; remove nothing.")]


def _block_passphrase(block: str) -> str | None:
    """The passphrase in the Prefect Secret block ``block`` when a Prefect server is configured, else None."""
    if not os.environ.get("PREFECT_API_URL"):
        return None
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(block).get())
    except ValueError:  # no such block: the setting is reported missing
        return None


def connect_from_settings(*, need_passphrase: bool = False):
    """``charhub_ops.pitr.ops.connect`` for this process's settings (the passphrase from the Secret block
    ``pitr_cipher_block`` when ``need_passphrase`` and ``CHARHUB_OPS_PITR_CIPHER_PASS`` is unset)."""
    from charhub_ops.pitr.ops import connect
    from charhub_ops.settings import load_settings

    settings = load_settings()
    passphrase = None
    if need_passphrase and not (settings.pitr.cipher_pass and settings.pitr.cipher_pass.get_secret_value()):
        passphrase = _block_passphrase(settings.pitr.cipher_block)
    return connect(settings, cipher_pass=passphrase)


@app.command()
def setup(as_json: JsonOpt = False) -> None:
    """Write pgBackRest's configuration, create the stanza when missing, and check that WAL reaches the
    repository (idempotent: run it again after changing a setting)."""
    from charhub_ops.pitr import ops

    def run():
        pitr = connect_from_settings(need_passphrase=True)
        return ops.setup(pitr.pgb, pitr.config_text())

    result = run_guarded(run)
    if as_json:
        print_json(result.__dict__)
        return
    what = "created" if result.created else "already present"
    err.print(f"[green]✓[/] {result.config_path} written; stanza {result.stanza} {what}; check passed "
              f"(WAL reaches the repository)", highlight=False, soft_wrap=True)


@app.command()
def backup(kind: TypeOpt = "full", as_json: JsonOpt = False) -> None:
    """Take a backup now and show it."""
    from charhub_ops.fmt import human_bytes
    from charhub_ops.pitr import ops

    new = run_guarded(lambda: ops.backup(connect_from_settings().pgb, kind))
    if as_json:
        print_json(ops.backup_summary(new))
        return
    err.print(f"[green]✓[/] {new.type} backup {new.label}: {human_bytes(new.size)} "
              f"({human_bytes(new.delta)} changed) in {new.seconds:.0f} s", highlight=False, soft_wrap=True)


def _size(n: int | None) -> str:
    from charhub_ops.fmt import human_bytes

    return "—" if n is None else human_bytes(n)


@app.command()
def info(as_json: JsonOpt = False) -> None:
    """The stanza's backups (oldest first), the archived WAL range and the status."""
    from rich.console import Console
    from rich.table import Table

    from charhub_ops.pitr import ops

    stanza = run_guarded(lambda: ops.info(connect_from_settings().pgb, must_exist=True))
    if as_json:
        print_json(ops.stanza_summary(stanza))
        return
    table = Table("label", "type", "start UTC", "duration", "size", "repo size", "WAL")
    for b in sorted(stanza.backups, key=lambda b: b.start):
        table.add_row(b.label, b.type + (" (error)" if b.error else ""), f"{b.start:%Y-%m-%d %H:%M:%S}",
                      f"{b.seconds:.0f} s", _size(b.size), _size(b.repo_size), f"{b.wal_start}–{b.wal_stop}")
    Console().print(table)
    wal = f"{stanza.wal_min} … {stanza.wal_max}" if stanza.wal_min else "none"
    err.print(f"stanza {stanza.name}: {stanza.status_message} (code {stanza.status_code}); WAL archived: {wal}"
              + ("; a backup is running" if stanza.backup_running else ""), highlight=False, soft_wrap=True)


@app.command()
def expire(dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Expire backups (and their WAL) beyond the retention: pitr_keep_weekly fulls, pitr_keep_daily diffs."""
    from charhub_ops.pitr import ops

    def run():
        pitr = connect_from_settings()
        return ops.expire(pitr.pgb, pitr.mapping, dry_run=dry_run)

    result = run_guarded(run)
    if as_json:
        print_json({"dry_run": result.dry_run, "expired": list(result.expired),
                    "archive_ranges": [list(r) for r in result.archive_ranges],
                    "retention": result.mapping.options(), "explanation": list(result.mapping.explanation)})
        return
    for line in result.mapping.explanation:
        err.print(line, highlight=False, soft_wrap=True)
    verb = "would expire" if dry_run else "expired"
    err.print(f"{verb}: {', '.join(result.expired) or 'nothing'}"
              + "".join(f"; WAL {a}–{b}" for a, b in result.archive_ranges), highlight=False, soft_wrap=True)


# charhub_ops.cli.pitr_restore (restore, verify, recover-table) registers its commands on `app` below this line.
from charhub_ops.cli import pitr_restore  # noqa: E402,F401
