"""Measurement and services shared by the bench scripts (a module, not a script: the scripts import it).

* **A measured step**: :func:`run_measured` runs a pipe of processes and returns a :class:`Run` — wall time, peak
  RSS of every stage and its direct children (VmHWM from /proc, polled every 20 ms, cross-checked with wait4's
  ru_maxrss), CPU seconds of the stages with their children, of the watched service process trees
  (/proc/<pid>/stat of each tree) and of the whole machine (/proc/stat), so that "others" = the rest of the
  machine (other users' work). :func:`run_chain` runs such steps one after the other and sums them; a
  :class:`Row` is one method of a report with its runs, a :class:`Setup` what a bench's methods run against.
* **Services**: a throwaway PostgreSQL cluster and a moto S3 server (tests/harness, as context managers), a real
  ``prefect server`` (own PREFECT_HOME, analytics off, 503s logged), the environments of the measured CLI and
  PostgreSQL tools (with a private bytecode cache by default), the newest flow run's figures from the Prefect API.
* **Running a bench**: :func:`run_main` (Ctrl-C / SIGTERM stop everything started, exit 130), :func:`log`, the
  machine's load and the checkout's commit for the report.

Importing this module puts the repository root on ``sys.path`` (the scripts import the project and tests/harness).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from tests.harness.services import (  # noqa: E402
    PgCluster,
    S3Server,
    _as_postgres,
    free_port,
    start_pg_cluster,
    start_s3_server,
)

GB = 1_000_000_000
MIB = 1024 * 1024
VENV_BIN = Path(sys.executable).parent
CLI = str(VENV_BIN / "charhub-ops")
BUCKET = "bench"
CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}
HZ = os.sysconf("SC_CLK_TCK")
RUNNING: list[subprocess.Popen] = []


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + vals[4]
    total = sum(vals[:8])
    return total - idle, total


def git_state() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ------------------------------------------------------------------------------------ process accounting

def _vm_hwm_kib(pid: int) -> int:
    with suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    found = []
    with suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with suppress(OSError):
                found += [int(c) for c in Path(task.path, "children").read_text().split()]
    return found


def _comm(pid: int) -> str:
    with suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return "?"


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` plus those of its reaped children (cutime + cstime)."""
    with suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(v) for v in fields[11:15]) / HZ
    return 0.0


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and every live descendant (exited ones are in their parents)."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        total += _cpu_seconds(p)
        stack += _children(p)
    return total


# ------------------------------------------------------------------------------------ a measured step

@dataclass
class Run:
    seconds: float
    peak_kib: dict[str, int]            # stage / child name -> VmHWM peak
    maxrss_kib: dict[str, int]          # stage name -> wait4 ru_maxrss (includes its reaped children)
    cpu: float                          # user + sys of all stages and their children
    machine_busy: float                 # busy CPU-seconds of the whole machine during the run
    services_cpu: dict[str, float] = field(default_factory=dict)  # watched service -> CPU seconds during the run
    stdout: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def other_cpu(self) -> float:
        """CPU seconds of everything else on the machine (other users' work) during the run."""
        return self.machine_busy - self.cpu - sum(self.services_cpu.values())

    def peak(self, match: Callable[[str], bool]) -> int:
        """The highest VmHWM (KiB) of the stages / children whose name satisfies ``match`` (0: none)."""
        return max((v for k, v in self.peak_kib.items() if match(k)), default=0)

    @classmethod
    def total(cls, steps: list[tuple[str, Run]]) -> Run:
        """One Run of ``steps`` run one after the other: sums, peaks, and extra["steps"] = [(name, seconds)]."""
        peak: dict[str, int] = {}
        maxrss: dict[str, int] = {}
        services: dict[str, float] = {}
        for _, r in steps:
            for k, v in r.peak_kib.items():
                peak[k] = max(peak.get(k, 0), v)
            for k, v in r.maxrss_kib.items():
                maxrss[k] = max(maxrss.get(k, 0), v)
            for k, v in r.services_cpu.items():
                services[k] = services.get(k, 0.0) + v
        return cls(seconds=sum(r.seconds for _, r in steps), peak_kib=peak, maxrss_kib=maxrss,
                   cpu=sum(r.cpu for _, r in steps), machine_busy=sum(r.machine_busy for _, r in steps),
                   services_cpu=services, extra={"steps": [(name, r.seconds) for name, r in steps]})


@dataclass
class Row:
    """A method of a report and its runs (the best one is reported)."""
    method: str
    runs: list[Run]

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda r: r.seconds)


@dataclass
class Setup:
    """What a bench's measured methods run against: the cluster, the environments of the CLI and of the PostgreSQL
    tools (bench_envs), the service process trees (service_pids), the newest flow run's figures (flow_run_stats)."""
    cluster: PgCluster
    cli_env: dict[str, str]
    pg_env: dict[str, str]
    watch: dict[str, int]
    run_stats: Callable[[], dict]


def _start_stages(stages: list[tuple[str, list[str]]], env: dict[str, str], cwd: Path | None, tmp: Path,
                  procs: list[tuple[str, subprocess.Popen]]) -> None:
    """Start ``stages`` as a pipe (stdout → stdin), each appended to ``procs`` as it starts; the last one's stdout
    and each one's stderr go to ``tmp``."""
    prev = None
    for i, (name, argv) in enumerate(stages):
        last = i == len(stages) - 1
        out = open(tmp / "stdout", "wb") if last else subprocess.PIPE
        with open(tmp / f"{name}.err", "wb") as errf:
            proc = subprocess.Popen(argv, stdin=prev.stdout if prev else subprocess.DEVNULL, stdout=out,
                                    stderr=errf, env=env, cwd=cwd)
        if last:
            out.close()
        if prev is not None:
            prev.stdout.close()  # the next stage owns the pipe now
        RUNNING.append(proc)
        procs.append((name, proc))
        prev = proc


def _poll_until_done(procs: list[tuple[str, subprocess.Popen]], started: float, timeout: float,
                     peaks: dict[str, int], maxrss: dict[str, int], codes: dict[str, int]) -> float:
    """Poll VmHWM of the stages and their children until all exited (wait4); their CPU seconds."""
    cpu = 0.0
    alive = {proc.pid: (name, proc) for name, proc in procs}
    while alive:
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"timeout after {timeout:.0f} s")
        for pid in list(alive):
            name, proc = alive[pid]
            peaks[name] = max(peaks.get(name, 0), _vm_hwm_kib(pid))
            for child in _children(pid):
                key = f"{name}>{_comm(child)}"
                peaks[key] = max(peaks.get(key, 0), _vm_hwm_kib(child))
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                proc.returncode = codes[name] = os.waitstatus_to_exitcode(status)
                maxrss[name] = usage.ru_maxrss
                cpu += usage.ru_utime + usage.ru_stime
                del alive[pid]
                RUNNING.remove(proc)
        time.sleep(0.02)
    return cpu


def run_measured(stages: list[tuple[str, list[str]]], env: dict[str, str], *, cwd: Path | None = None,
                 watch: dict[str, int] | None = None, timeout: float = 7200) -> Run:
    """Run ``stages`` as a pipe (stdout → stdin); wall time, peak RSS of every stage and of their
    direct children (by name), CPU time of the stages and of the ``watch``ed service process trees.
    Raises RuntimeError with the stderr tail of a failed stage."""
    watch = watch or {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-run-"))
    procs: list[tuple[str, subprocess.Popen]] = []
    peaks: dict[str, int] = {}
    maxrss: dict[str, int] = {}
    codes: dict[str, int] = {}
    services0 = {name: tree_cpu(pid) for name, pid in watch.items()}
    busy0, _ = cpu_jiffies()
    started = time.perf_counter()
    try:
        _start_stages(stages, env, cwd, tmp, procs)
        cpu = _poll_until_done(procs, started, timeout, peaks, maxrss, codes)
        seconds = time.perf_counter() - started
        busy1, _ = cpu_jiffies()
        services = {name: tree_cpu(pid) - services0[name] for name, pid in watch.items()}
        failed = [n for n, c in codes.items() if c != 0]
        if failed:
            tails = {n: (tmp / f"{n}.err").read_text(errors="replace")[-1500:] for n in failed}
            raise RuntimeError(f"stage(s) failed: {codes}\n" + "\n".join(f"--- {n}:\n{t}" for n, t in tails.items()))
        return Run(seconds=seconds, peak_kib=peaks, maxrss_kib=maxrss, cpu=cpu, machine_busy=(busy1 - busy0) / HZ,
                   services_cpu=services, stdout=(tmp / "stdout").read_text(errors="replace"))
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc in RUNNING:
                RUNNING.remove(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def run_chain(steps: list[tuple[str, list[tuple[str, list[str]]], dict[str, str]]], watch: dict[str, int],
              timeout: float = 7200) -> Run:
    """Run ``steps`` (name, pipe stages, env) one after the other; one Run with the sums and the step times."""
    return Run.total([(name, run_measured(stages, env, watch=watch, timeout=timeout))
                      for name, stages, env in steps])


# ------------------------------------------------------------------------------------ services

@contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster (tests/harness: fsync off, trust auth), removed on exit."""
    cluster = start_pg_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server, stopped on exit; this process's environment gets the bench's S3 credentials."""
    os.environ.update(CREDS)
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()


def pg_ctl(cluster: PgCluster, *args: str) -> None:
    subprocess.run(_as_postgres([str(cluster.bin / "pg_ctl"), "-D", str(cluster.datadir), *args]),
                   check=True, capture_output=True)


def start_prefect_server(home: Path) -> tuple[subprocess.Popen, str]:
    """``prefect server start`` in its own session (home ``home``, log ``home/server.log``): (process, API URL)."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_API_LOG_RETRYABLE_ERRORS": "true"}  # logs each 503 ("database is locked") it answers
    logf = open(home / "server.log", "wb")
    proc = subprocess.Popen([str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    logf.close()
    return proc, f"http://127.0.0.1:{port}/api"


def wait_prefect(proc: subprocess.Popen, api: str, home: Path, timeout: float = 120) -> float:
    """Seconds until the server answers /health; RuntimeError with its log tail if it exits or times out."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError("prefect server exited:\n" + (home / "server.log").read_text()[-2000:])
        try:
            with urllib.request.urlopen(api + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError("prefect server not healthy in time:\n" + (home / "server.log").read_text()[-2000:])


def start_services(stack: ExitStack, tmp: Path) -> tuple[subprocess.Popen, str, Path, S3Server, Any]:
    """A Prefect server (home in ``tmp``; it needs ~15 s: wait_prefect later) and an S3 server with the bucket,
    stopped when ``stack`` closes: (server process, its API URL, its home, the S3 server, an S3 client)."""
    server_home = tmp / "prefect-server"
    server_home.mkdir()
    server, api = start_prefect_server(server_home)
    stack.callback(stop_group, server)
    s3 = stack.enter_context(s3_server())
    s3client = boto3.client("s3", endpoint_url=s3.endpoint, config=Config(
        request_checksum_calculation="when_required", response_checksum_validation="when_required"))
    s3client.create_bucket(Bucket=BUCKET)
    return server, api, server_home, s3, s3client


def bench_envs(tmp: Path, s3: S3Server, api: str, cluster: PgCluster, no_bytecode_cache: bool,
               **cli_extra: str) -> tuple[dict[str, str], dict[str, str]]:
    """(cli_env, pg_env) of the measured processes: this environment without R2_/CHARHUB_OPS_/PREFECT_ settings,
    with the S3 server, a private bytecode cache (unless ``no_bytecode_cache``), for the CLI the Prefect server
    (client home in ``tmp``) and ``cli_extra``, for the PostgreSQL tools the cluster."""
    client_home = tmp / "prefect-client"
    client_home.mkdir()
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("R2_", "CHARHUB_OPS_", "PREFECT_")) and k != "DATABASE_URL"}
    base_env.update(CREDS)
    base_env["AWS_ENDPOINT_URL_S3"] = s3.endpoint
    if not no_bytecode_cache:  # like an installed package: modules compiled once, not at every start
        base_env.pop("PYTHONDONTWRITEBYTECODE", None)
        base_env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    cli_env = {**base_env, "PREFECT_API_URL": api, "PREFECT_HOME": str(client_home),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **cli_extra}
    pg_env = {**base_env, "PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "postgres"}
    return cli_env, pg_env


def service_pids(cluster: PgCluster, s3: S3Server, server: subprocess.Popen) -> dict[str, int]:
    """The service process trees whose CPU run_measured counts apart."""
    postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    return {"postgres": postmaster, "s3 server": s3.process.pid, "prefect server": server.pid}


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process we started in its own session, and its children (by its process group id)."""
    with suppress(ProcessLookupError):
        if proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, if any
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# ------------------------------------------------------------------------------------ the Prefect API

def api_post(api: str, path: str, body: dict) -> list[dict]:
    req = urllib.request.Request(api + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def last_flow_run(api: str) -> tuple[float, list[tuple[str, float]]]:
    """(total run time, [(task, seconds)]) of the newest flow run on the server."""
    run = api_post(api, "/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})[0]
    tasks = api_post(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200})
    tasks.sort(key=lambda t: t["start_time"] or "")
    return float(run["total_run_time"]), [(t["name"].rsplit("-", 1)[0], float(t["total_run_time"])) for t in tasks]


def flow_run_stats(api: str, server_home: Path) -> Callable[[], dict]:
    """A function that returns {"in_flow", "tasks"} of the newest flow run (last_flow_run) and "503s", the
    requests the Prefect server answered 503 since the previous call."""
    seen = 0

    def stats() -> dict:
        nonlocal seen
        in_flow, tasks = last_flow_run(api)
        locked = (server_home / "server.log").read_text(errors="replace").count("Encountered retryable exception")
        out = {"in_flow": in_flow, "tasks": tasks, "503s": locked - seen}
        seen = locked
        return out

    return stats


# ------------------------------------------------------------------------------------ running, reporting

def interrupt_on_sigterm() -> None:
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


def run_main(main: Callable[[], int]) -> None:
    """sys.exit(main()); Ctrl-C or SIGTERM (interrupt_on_sigterm): a note and exit status 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped", file=sys.stderr)
        sys.exit(130)


def fmt_mb(kib: int) -> str:
    return f"{kib / 1024:.0f}" if kib else "-"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def flow_cells(run: Run) -> tuple[str, str]:
    """The report's "in flow s" and "503s" cells of ``run`` ("-" for a run without a flow)."""
    in_flow = f"{run.extra['in_flow']:.2f}" if "in_flow" in run.extra else "-"
    locked = str(run.extra["503s"]) if "503s" in run.extra else "-"
    return in_flow, locked


def print_head(head: str) -> None:
    """A table's header line and its rule."""
    print(head)
    print("-" * len(head))
