"""What it costs to keep every deployment runnable on one host: a process worker vs ``charhub-ops serve``.

    uv run python bench/idle_cost.py [--minutes 4] [--runs 3] [--cases server,worker,serve,worker-60,serve-60]

Each case gets a fresh ``prefect server`` (SQLite, its background services on but the scheduler off, so no run
is ever due; tests/harness/prefect_server.py) with ``charhub-ops setup`` done — the ``charhub-ops`` process pool
and every deployment of prefect.yaml — and then one of:

- ``server``: nothing else (the server's own idle cost, the baseline for the others);
- ``worker``: ``prefect worker start --pool charhub-ops`` (PREFECT_WORKER_QUERY_SECONDS 10, Prefect's default);
- ``serve``: ``charhub-ops serve`` (every deployment served by one process; PREFECT_RUNNER_POLL_FREQUENCY 10);
- ``worker-60`` / ``serve-60``: the same with the poll interval raised to 60 s.

After a settling time the case sits idle for ``--minutes``: CPU seconds (user + system, from /proc: every process
of the poller's session, the flow-run processes it started included, plus what those reaped) per hour and resident
memory (sum of the session's RSS, median of samples every 5 s) of the poller and of the server. Then ``--runs``
flow runs of the ``monitor`` deployment with a one-check config (one disk check: the cheapest deployment there is)
are created through the API one after another: wall time from the create call to the final state seen by polling
the API every 0.5 s, the run's own start → end, and the CPU seconds of the poller's session and of the server
during it (the poll of this script included, idle share not subtracted).

Figures in bench/README.md ("Idle cost of running the deployments") and docs/deployments.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
from tests.harness.prefect_server import BIN, POOL, OpsStack, kill, start_prefect_server  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    name: str
    poller: str | None  # "worker" | "serve" | None
    poll_seconds: int = 10

    @property
    def env(self) -> dict[str, str]:
        return {"PREFECT_WORKER_QUERY_SECONDS": str(self.poll_seconds),
                "PREFECT_RUNNER_POLL_FREQUENCY": str(self.poll_seconds)}


CASES = {c.name: c for c in [Case("server", None), Case("worker", "worker"), Case("serve", "serve"),
                             Case("worker-60", "worker", 60), Case("serve-60", "serve", 60)]}


@dataclass(frozen=True)
class Sample:
    cpu: float  # seconds, user + system, live processes plus the children they reaped
    rss: int  # bytes, sum over the live processes
    procs: int


def _processes() -> dict[int, tuple[int, int, int, int]]:
    """pid → (ppid, session, CPU ticks user + system + reaped children's, RSS pages) of every process."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        out[int(entry.name)] = (int(fields[1]), int(fields[3]), sum(int(v) for v in fields[11:15]), int(fields[21]))
    return out


def session_sample(root: int) -> Sample:
    """CPU and RSS of ``root`` (a session leader: the harness starts each service in its own session), every
    process of its session and every descendant — Prefect starts a flow-run process in a session of its own."""
    procs = _processes()

    def counted(pid: int) -> bool:
        while pid > 1 and pid in procs:
            if pid == root or procs[pid][1] == root:
                return True
            pid = procs[pid][0]
        return False

    mine = [v for pid, v in procs.items() if counted(pid)]
    return Sample(sum(v[2] for v in mine) / TICK, sum(v[3] for v in mine) * PAGE, len(mine))


@dataclass
class Watch:
    """Samples a session's RSS every ``every`` seconds in a thread until stopped."""

    sid: int
    every: float = 5.0
    rss: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Watch:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.rss.append(session_sample(self.sid).rss)

    @property
    def median_mb(self) -> float:
        return statistics.median(self.rss) / MB if self.rss else float("nan")


def monitor_config(home: Path) -> Path:
    """One disk check that passes (levels above any real use): no event, no incident, no cleanup run."""
    path = home / "monitor.yaml"
    path.write_text('{"checks": [{"id": "bench-disk", "type": "disk", "paths": ["/"], '
                    '"levels": [99.0, 99.5, 99.9]}], "incident_dir": "' + str(home / "incidents") + '"}')
    return path


def start_poller(stack: OpsStack, case: Case) -> subprocess.Popen | None:
    """The worker or ``charhub-ops serve`` of ``case``, in its own session, logging to its home."""
    if case.poller is None:
        return None
    home = stack.home / case.poller
    home.mkdir()
    env = {**stack.worker_env, **stack.client_env(), **case.env, "PREFECT_HOME": str(home)}
    cmd = ([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", "bench-worker"]
           if case.poller == "worker" else [str(BIN / "charhub-ops"), "serve"])
    with open(home / "out.log", "wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT if case.poller == "serve" else home, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(stack: OpsStack, case: Case, proc: subprocess.Popen | None, timeout: float = 300) -> None:
    """Until the poller has polled once: the pool's worker is online, or (serve) ``monitor`` has no pool and
    is READY (the runner's poll marks its deployments ready)."""
    if proc is None:
        return
    deadline = time.monotonic() + timeout
    while not _ready(stack, case):
        assert proc.poll() is None, f"{case.poller} exited: " + _tail(stack)
        assert time.monotonic() < deadline, f"{case.poller} not ready after {timeout} s"
        time.sleep(1)


def _ready(stack: OpsStack, case: Case) -> bool:
    if case.poller == "worker":
        workers = stack.request("POST", f"/work_pools/{POOL}/workers/filter", {})
        return any(w["status"] == "ONLINE" for w in workers)
    dep = stack.request("GET", f"/deployments/{stack.deployment_id('monitor')}")
    return dep["work_pool_name"] is None and dep["status"] == "READY"


def idle(server_sid: int, poller_sid: int | None, seconds: float) -> dict[str, float]:
    """CPU s/h and median RSS (MB) of the server and the poller over ``seconds`` of nothing to do."""
    sids = {"server": server_sid, **({"poller": poller_sid} if poller_sid else {})}
    before = {k: session_sample(s) for k, s in sids.items()}
    start = time.monotonic()
    watches = {k: Watch(s) for k, s in sids.items()}
    with ExitStack() as running:
        for w in watches.values():
            running.enter_context(w)
        time.sleep(seconds)
    elapsed = time.monotonic() - start
    out = {}
    for k, sid in sids.items():
        out[f"{k}_cpu_h"] = (session_sample(sid).cpu - before[k].cpu) / elapsed * 3600
        out[f"{k}_rss"] = watches[k].median_mb
    return out


def one_run(stack: OpsStack, server_sid: int, poller_sid: int, config: Path) -> dict[str, float]:
    """One ``monitor`` flow run created through the API; wall time, the run's own time, CPU of both sides."""
    idle_procs = session_sample(poller_sid).procs
    before = session_sample(poller_sid).cpu, session_sample(server_sid).cpu
    start = time.monotonic()
    run = stack.wait_for_state(stack.run("monitor", {"config": str(config), "window_seconds": 0}))
    wall = time.monotonic() - start
    assert run["state_type"] == "COMPLETED", f"{run['state']['message']}: " + _tail(stack)
    deadline = time.monotonic() + 30
    while session_sample(poller_sid).procs > idle_procs and time.monotonic() < deadline:
        time.sleep(0.2)  # the flow-run process exits (its CPU then counts in its parent's reaped share)
    return {"wall": wall, "run": run["total_run_time"],
            "poller_cpu": session_sample(poller_sid).cpu - before[0],
            "server_cpu": session_sample(server_sid).cpu - before[1]}


def _tail(stack: OpsStack) -> str:
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in stack.home.glob("*/out.log"))


def run_case(case: Case, base: Path, args: argparse.Namespace) -> dict:
    home = base / case.name
    home.mkdir()
    server, api = start_prefect_server(home, services=True)
    config = monitor_config(home)
    worker_env = {**os.environ, "CHARHUB_OPS_HOME": str(ROOT), "CHARHUB_OPS_MONITOR_CONFIG": str(config)}
    stack = OpsStack(home=home, api=api, server=server, worker_env=worker_env)
    proc = None
    try:
        stack.register()
        proc = start_poller(stack, case)
        wait_ready(stack, case, proc)
        time.sleep(args.settle)
        figures = idle(server.pid, proc and proc.pid, args.minutes * 60)
        figures["runs"] = [one_run(stack, server.pid, proc.pid, config) for _ in range(args.runs)] if proc else []
        return figures
    finally:
        if proc:
            kill(proc)
        stack.stop()


def _range(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs]
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def report(results: dict[str, dict], args: argparse.Namespace) -> None:
    print(f"\nidle {args.minutes} min per case (after {args.settle} s settling); CPU s per hour "
          "(% of one core), RSS median")
    print(f"{'case':<11} {'poller CPU s/h':>16} {'poller RSS':>11} {'server CPU s/h':>16} {'server RSS':>11}")
    for name, r in results.items():
        poller = (f"{r['poller_cpu_h']:7.1f} ({r['poller_cpu_h'] / 36:.2f} %)", f"{r['poller_rss']:.0f} MB") \
            if "poller_cpu_h" in r else ("—", "—")
        print(f"{name:<11} {poller[0]:>16} {poller[1]:>11} "
              f"{r['server_cpu_h']:7.1f} ({r['server_cpu_h'] / 36:.2f} %) {r['server_rss']:8.0f} MB")
    print(f"\none monitor run (one disk check), median (range) of {args.runs}: seconds")
    print(f"{'case':<11} {'create → final':>20} {'run start → end':>20} {'poller CPU':>20} {'server CPU':>20}")
    for name, r in results.items():
        if r["runs"]:
            print(f"{name:<11} " + " ".join(f"{_range(r['runs'], k):>20}"
                                            for k in ("wall", "run", "poller_cpu", "server_cpu")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="idle time measured per case")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after the poller is ready")
    parser.add_argument("--runs", type=int, default=3, help="monitor runs per case")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="idle-cost-") as tmp:
        for name in args.cases.split(","):
            print(f"{time.strftime('%H:%M:%S')} {name} …", flush=True)
            results[name] = run_case(CASES[name], Path(tmp), args)
            print(f"  {results[name]}", flush=True)
    report(results, args)


if __name__ == "__main__":
    main()
