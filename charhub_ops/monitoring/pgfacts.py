"""PostgreSQL facts for checks and diagnoses (``pg_stat_activity``, ``pg_locks``), and the one action on
sessions: cancel, then terminate, backends that block others. psycopg errors become DatabaseError.

Sessions of charhub-ops itself (``application_name`` ``charhub-ops`` or ``charhub-ops:…``, e.g. a backup's
snapshot session idle in transaction for the whole upload, or its ``charhub-ops:pg_dump``) are listed under
``ours``: they never count as a long query, an idle transaction or a lock waiter, and are never a blocker to
terminate. A session of the application that waits behind one of ours still counts as a lock waiter."""

from __future__ import annotations

from charhub_ops.pgurl import parse_pg_url
from charhub_ops.postgres import OURS, PsycopgSession

__all__ = ["sessions", "is_ours", "health_facts", "blockers", "signal_backends"]

SESSIONS_SQL = """
SELECT pid, usename, application_name, state, coalesce(wait_event_type, ''),
       coalesce(extract(epoch FROM now() - query_start), 0)::float8,
       coalesce(extract(epoch FROM now() - state_change), 0)::float8,
       coalesce(extract(epoch FROM now() - xact_start), 0)::float8,
       pg_blocking_pids(pid), left(query, 300)
FROM pg_stat_activity
WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'
ORDER BY query_start NULLS LAST"""
_KEYS = ("pid", "user", "application", "state", "wait", "query_s", "state_s", "xact_s", "blocked_by", "query")


def _session(url: str) -> PsycopgSession:
    return PsycopgSession(parse_pg_url(url), connect_timeout=5)


def sessions(url: str) -> tuple[list[dict], int, int]:
    """Client sessions (pid, user, state, ages in seconds, blocking pids, query head), all connections and
    max_connections."""
    with _session(url) as s:
        rows = s.query(SESSIONS_SQL)
        (total, maximum), = s.query("SELECT (SELECT count(*) FROM pg_stat_activity), "
                                    "current_setting('max_connections')::int")
    return [dict(zip(_KEYS, row, strict=True)) for row in rows], int(total), int(maximum)


def is_ours(row: dict) -> bool:
    """A session charhub-ops opened (its application_name carries the prefix: charhub_ops.postgres.OURS)."""
    app = row.get("application") or ""
    return app == OURS or app.startswith(OURS + ":")


def health_facts(url: str, lock_s: float, long_s: float, idle_s: float) -> dict:
    everyone, total, maximum = sessions(url)
    rows = [r for r in everyone if not is_ours(r)]
    return {
        "connections": total, "max_connections": maximum,
        "lock_waits": [r for r in rows if r["wait"] == "Lock" and r["query_s"] > lock_s],
        "long_queries": [r for r in rows if r["state"] == "active" and r["query_s"] > long_s],
        "idle_in_transaction": [r for r in rows if (r["state"] or "").startswith("idle in transaction")
                                and r["state_s"] > idle_s],
        "ours": [{"pid": r["pid"], "application": r["application"], "state": r["state"],
                  "state_s": round(r["state_s"], 1)} for r in everyone if is_ours(r)],
        "blocking_chains": [{"pid": r["pid"], "blocked_by": r["blocked_by"], "waiting_s": round(r["query_s"], 1)}
                            for r in rows if r["blocked_by"]],
    }


def blockers(url: str, lock_s: float, idle_s: float) -> dict[int, str]:
    """Backends to act on, with the reason: those blocking a session that waited > ``lock_s`` seconds, and
    those idle in transaction for > ``idle_s`` seconds — never one of ours."""
    facts = health_facts(url, lock_s, float("inf"), idle_s)
    ours = {s["pid"] for s in facts["ours"]}
    found: dict[int, str] = {}
    for waiter in facts["lock_waits"]:
        for pid in waiter["blocked_by"]:
            if pid not in ours:
                found[pid] = f"blocks pid {waiter['pid']} for {waiter['query_s']:.0f} s"
    for idle in facts["idle_in_transaction"]:
        found.setdefault(idle["pid"], f"idle in transaction for {idle['state_s']:.0f} s")
    return found


def signal_backends(url: str, pids: list[int], how: str) -> dict[int, bool]:
    """``pg_cancel_backend`` (how='cancel') or ``pg_terminate_backend`` ('terminate') each pid."""
    func = {"cancel": "pg_cancel_backend", "terminate": "pg_terminate_backend"}[how]
    with _session(url) as s:
        return {pid: bool(s.query(f"SELECT {func}({int(pid)})")[0][0]) for pid in pids}
