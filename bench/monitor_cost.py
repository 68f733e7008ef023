"""What monitoring costs all the time: CPU and Prefect database growth, side by side (issue 18).

    uv run python bench/monitor_cost.py [--minutes 3] [--legacy-passes 3]

Starts a throwaway PostgreSQL cluster, a local HTTP server (its own process) and ``prefect server`` (SQLite,
background services on, as production) and probes 10 checks — 6 HTTP, 2 postgres, 2 disk — every 30 s:

* **baseline**: a plain Python loop calling the same probes (charhub_ops.monitoring.checks.run_check), no Prefect;
* **service**: ``charhub-ops monitor run`` (the long-running monitor, no flow run);
* **window**: the ``monitor`` flow with ``window_seconds`` (what the hourly deployment runs), in a process of its
  own as a worker starts it;
* **legacy**: ``--legacy-passes`` one-pass runs of the ``monitor`` flow, each in a new process (the deployment
  before issue 18: one every minute).

CPU is read from /proc (user + system of the process, and of the server's process group, minus the server's own
idle rate measured first); steady state is from the end of the first pass to the end. Database growth is counted
in rows per table (events split into heartbeats, flow-run state events and the rest) and turned into a day:
heartbeats every 10 min (144), one window per hour (24), legacy one pass a minute (1,440); bytes per row are each
table's own average (table + its indexes, SQLite ``dbstat``) at the end of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from charhub_ops.monitoring.config import MonitorConfig  # noqa: E402
from tests.harness.prefect_server import kill, start_prefect_server  # noqa: E402
from tests.harness.services import free_port, start_pg_cluster  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
HEARTBEATS_A_DAY = 86400 / MonitorConfig.model_fields["heartbeat_every"].default  # 144 (every 10 min)
BIN = Path(sys.executable).parent
TABLES = ("events", "event_resources", "flow_run", "task_run", "log", "artifact", "variable")
BASELINE = """
import sys, time
from datetime import UTC, datetime
from charhub_ops.monitoring.config import load_config
from charhub_ops.monitoring.checks import CheckContext, run_check
import os
cfg = load_config(sys.argv[1]); end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    started = time.monotonic()
    for c in cfg.checks:
        url = os.environ.get(getattr(c, "database_url_env", "") or "")
        run_check(c, CheckContext(now=datetime.now(UTC), database_url=url))
    time.sleep(max(0.0, 30 - (time.monotonic() - started)))
"""
WINDOW = "import sys; from flows.monitor import monitor_flow; monitor_flow(window_seconds=int(sys.argv[1]))"
ONE_PASS = "from flows.monitor import monitor_flow; monitor_flow()"


def cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid``; 0 when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def group_cpu(pgid: int) -> float:
    """CPU seconds of every live process in the process group ``pgid`` (the server and its children)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def snapshot(db: Path) -> dict:
    """Rows per table (events by kind) and average bytes per row of each table with its indexes."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        kinds = dict(conn.execute(
            "SELECT CASE WHEN event = 'charhub.monitor.heartbeat' THEN 'heartbeat' WHEN event LIKE "
            "'prefect.flow%' OR event LIKE 'prefect.task-run.%' THEN 'runs' ELSE 'other' END k, count(*) "
            "FROM events GROUP BY k").fetchall())
        res = dict(conn.execute(
            "SELECT CASE WHEN e.event = 'charhub.monitor.heartbeat' THEN 'heartbeat' WHEN e.event LIKE "
            "'prefect.flow%' OR e.event LIKE 'prefect.task-run.%' THEN 'runs' ELSE 'other' END k, count(*) "
            "FROM event_resources r JOIN events e ON e.id = r.event_id GROUP BY k").fetchall())
        sizes = dict(conn.execute("SELECT m.tbl_name, sum(s.pgsize - s.unused) FROM dbstat s JOIN sqlite_master m "
                                  "ON m.name = s.name GROUP BY m.tbl_name").fetchall())
    finally:
        conn.close()
    per_row = {t: sizes.get(t, 0) / rows[t] if rows[t] else 0 for t in TABLES}
    return {"rows": rows, "events": kinds, "resources": res, "per_row": per_row,
            "bytes": db.stat().st_size + (Path(f"{db}-wal").stat().st_size if Path(f"{db}-wal").exists() else 0)}


def delta(before: dict, after: dict) -> dict:
    out = {t: after["rows"][t] - before["rows"][t] for t in TABLES}
    for part in ("events", "resources"):
        for kind in ("heartbeat", "runs", "other"):
            out[f"{part}:{kind}"] = after[part].get(kind, 0) - before[part].get(kind, 0)
    return out


def per_day(d: dict, per_row: dict, heartbeats: float, runs: float, seconds: float, hb_day: float,
            runs_day: float) -> tuple[float, float]:
    """Rows and bytes a day: heartbeat rows × 288, run rows (flow/task runs, their events, logs) × runs a day,
    anything else at the measured rate."""
    def scale(kind: str) -> float:
        if kind == "heartbeat":
            return hb_day / heartbeats if heartbeats else 0
        if kind == "runs":
            return runs_day / runs if runs else 0
        return 86400 / seconds
    rows = {t: d[t] * (runs_day / runs if runs else 0) for t in ("flow_run", "task_run", "log")}
    rows["artifact"] = d["artifact"] * (runs_day / runs if runs else 0)
    rows["events"] = sum(d[f"events:{k}"] * scale(k) for k in ("heartbeat", "runs", "other"))
    rows["event_resources"] = sum(d[f"resources:{k}"] * scale(k) for k in ("heartbeat", "runs", "other"))
    return sum(rows.values()), sum(n * per_row.get(t, 0) for t, n in rows.items())


class Bench:
    def __init__(self, home: Path, api: str, server_pgid: int, env: dict, config: str) -> None:
        self.home, self.api, self.server_pgid, self.env, self.config = home, api, server_pgid, env, config
        self.db = home / "prefect.db"

    def idle_rate(self, seconds: float = 20) -> float:
        start = group_cpu(self.server_pgid)
        time.sleep(seconds)
        return (group_cpu(self.server_pgid) - start) / seconds

    def prime(self, seconds: float = 70) -> None:
        """A first monitor run: every check's first probes (saved: its streak starts) and the artifact made,
        as on a host where the monitor has run before — the modes below then measure the steady state."""
        subprocess.run([str(BIN / "charhub-ops"), "monitor", "run", "--for", f"{seconds}s"], env=self.env, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    def steady(self, cmd: list[str], warmup: float = 15, env: dict | None = None) -> dict:
        """Run ``cmd``; CPU of it and of the server from ``warmup`` s after its start (imports, the flow run and
        the first pass done: that part is ``startup``) to its end."""
        before = snapshot(self.db)
        proc = subprocess.Popen(cmd, env={**self.env, **(env or {})}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, cwd=ROOT)
        time.sleep(warmup)
        t0, c0, s0 = time.monotonic(), cpu(proc.pid), group_cpu(self.server_pgid)
        startup = c1 = c0
        while proc.poll() is None:
            c1 = max(c1, cpu(proc.pid))  # the last reading before it exits
            time.sleep(0.2)
        t1, s1 = time.monotonic(), group_cpu(self.server_pgid)
        time.sleep(5)  # events are written by the server's persister
        return {"startup": startup, "cpu": c1 - c0, "server": s1 - s0, "seconds": t1 - t0,
                "delta": delta(before, snapshot(self.db))}

    def legacy(self, passes: int) -> dict:
        """One-pass runs, each in a new process (as a worker runs every scheduled flow run)."""
        before, s0, total = snapshot(self.db), group_cpu(self.server_pgid), 0.0
        t0 = time.monotonic()
        for _ in range(passes):
            proc = subprocess.Popen([sys.executable, "-c", ONE_PASS], env=self.env, cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, _, usage = os.wait4(proc.pid, 0)
            total += usage.ru_utime + usage.ru_stime
        time.sleep(5)
        return {"cpu": total, "server": group_cpu(self.server_pgid) - s0, "seconds": time.monotonic() - t0,
                "delta": delta(before, snapshot(self.db))}


def checks(home: Path, http_port: int) -> list[dict]:
    http = [{"id": f"web-{i}", "type": "http", "url": f"http://127.0.0.1:{http_port}/health.json",
             "expect_json": {"status": "ok"}, "interval": "30s"} for i in range(6)]
    pg = [{"id": f"db-{i}", "type": "postgres", "database_url_env": f"BENCH_PG_{i}", "interval": "30s"}
          for i in range(2)]
    disk = [{"id": f"disk-{i}", "type": "disk", "paths": [p], "levels": [99.7, 99.8, 99.9], "interval": "30s"}
            for i, p in enumerate(["/", str(home)])]
    return http + pg + disk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--legacy-passes", type=int, default=3)
    args = parser.parse_args()
    seconds = int(args.minutes * 60)
    home = Path(tempfile.mkdtemp(prefix="charhub-ops-monitor-cost-"))
    (home / "www").mkdir()
    (home / "www" / "health.json").write_text(json.dumps({"status": "ok"}))
    (home / "server").mkdir()
    http_port, pg = free_port(), start_pg_cluster()
    web = subprocess.Popen([sys.executable, "-m", "http.server", str(http_port), "-b", "127.0.0.1", "-d",
                            str(home / "www")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        server, api = start_prefect_server(home / "server", services=True)
        config = home / "monitor.yaml"
        config.write_text(yaml.safe_dump({"checks": checks(home, http_port), "incident_dir": str(home / "inc")}))
        env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(home / "client"),
               "CHARHUB_OPS_MONITOR_CONFIG": str(config), "CHARHUB_OPS_MONITOR_STATE": "prefect",
               "BENCH_PG_0": pg.create_database("bench_a"), "BENCH_PG_1": pg.create_database("bench_b"),
               "CHARHUB_OPS_TASK_RETRIES": "0", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        bench = Bench(home / "server", api, server.pid, env, str(config))
        report(bench, seconds, args.legacy_passes, len(checks(home, http_port)))
    finally:
        if server is not None:
            kill(server)
        web.kill()
        pg.stop()


def report(bench: Bench, seconds: int, legacy_passes: int, n_checks: int) -> None:
    bench.prime()
    idle = bench.idle_rate()
    print(f"server idle: {idle * 100:.2f} % of a core (subtracted below)", flush=True)
    runs = {"baseline (plain loop)": bench.steady([sys.executable, "-c", BASELINE, bench.config, str(seconds)])}
    if legacy_passes:
        runs["legacy (1 pass/process)"] = bench.legacy(legacy_passes)
    runs["service (monitor run)"] = bench.steady([str(BIN / "charhub-ops"), "monitor", "run", "--for", f"{seconds}s"])
    runs["window (monitor flow)"] = bench.steady([sys.executable, "-c", WINDOW, str(seconds)],  # as prefect.yaml
                                                 env={"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "1800"})
    final = snapshot(bench.db)
    print(f"\n{n_checks} checks every 30 s, {seconds} s per mode; per_row bytes: "
          + ", ".join(f"{t} {b:.0f}" for t, b in final["per_row"].items() if b))
    print(f"{'mode':<26}{'ms CPU/check/pass':>18}{'monitor %core':>15}{'server %core':>14}{'total %core':>13}"
          f"{'CPU s/hour':>12}{'rows/day':>10}{'MB/day':>9}")
    for name, r in runs.items():
        legacy = name.startswith("legacy")
        passes = legacy_passes if legacy else max(1.0, r["seconds"] / 30)
        server = max(0.0, r["server"] - idle * r["seconds"])
        if legacy:  # one pass a minute, each paying its own process
            mon_rate, srv_rate = r["cpu"] / legacy_passes / 60, server / legacy_passes / 60
            rows, size = per_day(r["delta"], final["per_row"], 0, legacy_passes, legacy_passes * 60, 0, 1440)
        else:
            mon_rate = r["cpu"] / r["seconds"] + (r["startup"] / 3600 if name.startswith("window") else 0)
            srv_rate = server / r["seconds"]
            hb = r["delta"]["events:heartbeat"]
            runs_in = r["delta"]["flow_run"]
            rows, size = per_day(r["delta"], final["per_row"], hb, runs_in, r["seconds"], HEARTBEATS_A_DAY, 24)
        per_check = r["cpu"] / passes / n_checks * 1000
        print(f"{name:<26}{per_check:>18.2f}{mon_rate * 100:>15.3f}{srv_rate * 100:>14.3f}"
              f"{(mon_rate + srv_rate) * 100:>13.3f}{(mon_rate + srv_rate) * 3600:>12.1f}{rows:>10.0f}"
              f"{size / 1e6:>9.3f}", flush=True)
        print(f"{'':<26}rows in the run: " + ", ".join(f"{k} {v}" for k, v in r["delta"].items() if v)
              + (f"; startup {r['startup']:.2f} s CPU" if "startup" in r else ""), flush=True)


if __name__ == "__main__":
    main()
