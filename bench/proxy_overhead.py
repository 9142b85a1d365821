#!/usr/bin/env python3
"""Proxy overhead benchmark for pdp_observe (method: /work/shared/docs/performance.md).

    .venv/bin/python bench/proxy_overhead.py [--quick] [--rounds 3] [--duration 10] [--json out.json]

Starts, in one process tree on 127.0.0.1 only:
  * nginx (1 worker, temp prefix) as the fake Prisma engine on core 0:
      /fast   -> 200, 129-byte Prisma JSON body (``return 200``)
      /slow   -> same body after 20 ms (nginx echo module: echo_sleep + echo_exec)
      /large  -> 1 MiB JSON body (static file, sendfile)
  * the subjects, each alone on core 1 (taskset -c 1):
      A   direct (wrk -> nginx, no proxy)
      B   pdp_observe (``pdp-observe proxy``, recording to a temp SQLite db; its recorder
          process at nice +10 on both cores, as deployed without pinning)
      Bp  the same with the recorder process pinned to core 0 (beside wrk and the engine)
      C   bench/baseline_proxy.py (bare aiohttp, no recording)
      Cuv bench/baseline_proxy.py --uvloop
      N   nginx reverse proxy, access log on (optional: --subjects ...,N)
  * wrk (core 0), POST with a 1,049-byte Prisma JSON-protocol findMany body.

Per round, subjects are interleaved (A, B, C, Cuv); for each: warm-up, 32 conns small,
1 conn small, 1 conn 20 ms engine, then a 32-conn burst followed by 4 conns of 1 MiB responses.
After the rounds: one run of B (and Bp) paced at ~80 % of its median max rate, and "stored" = rows in the
``exchanges`` table vs the requests wrk completed. Medians over rounds; added latency and
ratios are paired per round against A (or C).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_BIN = REPO / ".venv" / "bin"
REQUEST_BODY_FILE = HERE / "prisma_findmany_request.json"

SMALL_BODY = ('{"data":{"findManyUser":[{"id":1,"email":"alice@example.test","name":"Alice"},'
              '{"id":2,"email":"bob@example.test","name":"Bob"}]}}')
LARGE_SIZE = 1 << 20
ENGINE_CPU = WRK_CPU = 0
PROXY_CPU = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------- processes

class Procs:
    """Every long-lived child runs in its own session/process group; stop() kills the group."""

    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen, object]] = []

    def start(self, name: str, argv: list[str], cpu: int | None, logfile: Path,
              env: dict | None = None) -> subprocess.Popen:
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        f = open(logfile, "wb")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True, env=env)
        self.items.append((name, p, f))
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 5.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if p.poll() is not None:
                break
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
        # anything left in the group (e.g. nginx workers) goes too
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for i, (_, q, f) in enumerate(self.items):
            if q is p:
                f.close()
                del self.items[i]
                break

    def stop_all(self) -> None:
        for _, p, _ in list(reversed(self.items)):
            self.stop(p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_post(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, body=b'{"modelName":"User","action":"findMany","query":{}}',
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_ready(name: str, p: subprocess.Popen, port: int, logfile: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"{name} exited with {p.returncode}:\n{tail(logfile)}")
        try:
            st, body = http_post(port, "/fast")
            if st == 200 and body == SMALL_BODY.encode():
                return
            last = f"status {st}, body {body[:80]!r}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready on :{port} after {timeout}s ({last}):\n{tail(logfile)}")


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- /proc accounting

def _proc_stat(pid: int) -> list[str] | None:
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return s[s.rfind(")") + 2:].split()


def pid_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            f = _proc_stat(int(d))
            if f:
                children.setdefault(int(f[1]), []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu(root: int | None) -> float:
    """CPU seconds (user+sys) of a process tree, live processes and threads included."""
    if root is None:
        return 0.0
    tot = 0
    for p in pid_tree(root):
        f = _proc_stat(p)
        if f:
            tot += int(f[11]) + int(f[12])
    return tot / CLK_TCK


def proc_cpu(pid: int | None) -> float:
    """CPU seconds (user+sys) of one process (all its threads), without its children."""
    f = _proc_stat(pid) if pid else None
    return (int(f[11]) + int(f[12])) / CLK_TCK if f else 0.0


def tree_rss_mb(root: int | None) -> float:
    if root is None:
        return 0.0
    kb = 0
    for p in pid_tree(root):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    kb += int(line.split()[1])
        except OSError:
            pass
    return kb / 1024


def sys_cpu() -> tuple[float, float]:
    """(busy seconds, steal seconds) over all cores from /proc/stat."""
    f = open("/proc/stat").readline().split()
    v = [int(x) for x in f[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


# --------------------------------------------------------------------------- engine (nginx)

def write_large(path: Path) -> None:
    rows, i, size = [], 0, 40
    while size < LARGE_SIZE - 200:
        r = (f'{{"id":{i},"email":"user{i}@example.test","name":"User {i}",'
             f'"bio":"Writes about databases, type-safe ORMs and query planning.",'
             f'"createdAt":"2024-03-{1 + i % 28:02d}T10:{i % 60:02d}:00.000Z"}}')
        rows.append(r)
        size += len(r) + 1
        i += 1
    head = '{"data":{"findManyUser":[' + ",".join(rows) + '],"cursor":"'
    pad = LARGE_SIZE - len(head) - len('"}}')
    data = head + "x" * pad + '"}}'
    assert len(data) == LARGE_SIZE
    path.write_text(data)


def nginx_common(prefix: Path) -> str:
    return f"""worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
  client_body_temp_path {prefix}/t_body; proxy_temp_path {prefix}/t_proxy;
  fastcgi_temp_path {prefix}/t_fcgi; uwsgi_temp_path {prefix}/t_uwsgi; scgi_temp_path {prefix}/t_scgi;
  keepalive_requests 1000000000; keepalive_timeout 300s;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  client_body_buffer_size 64k;
"""


def start_engine(procs: Procs, tmp: Path, port: int) -> subprocess.Popen:
    prefix = tmp / "engine"
    www = prefix / "www"
    www.mkdir(parents=True)
    for d in (tmp, prefix, www):
        d.chmod(0o755)  # nginx workers run as nobody when we are root
    write_large(www / "large")
    (www / "large").chmod(0o644)
    for src, dst in (("qpe_findmany_response.json", "qpe_plain.json"),
                     ("qpe_findmany_response_telemetry.json", "qpe_tel.json"), ("engine_metrics.txt", "metrics.txt")):
        (www / dst).write_bytes((HERE / src).read_bytes())
        (www / dst).chmod(0o644)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
{nginx_common(prefix)}
  access_log off;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /fast {{ default_type application/json; return 200 '{SMALL_BODY}'; }}
    location = /slow {{ echo_sleep 0.02; echo_exec /fast; }}
    location = /large {{ root {www}; types {{ }} default_type application/json; error_page 405 =200 $uri; }}
    # --correlation: a Prisma 7 executor answering /query with recorded real answers; with
    # tracing asked (the sidecar's capture header) the one that carries spans and query logs
    location = /query {{
      if ($http_x_capture_telemetry ~ tracing) {{ rewrite ^ /qpe_tel.json last; }}
      rewrite ^ /qpe_plain.json last;
    }}
    location ~ ^/qpe_(tel|plain)\.json$ {{ root {www}; types {{ }} default_type application/json; error_page 405 =200 $uri; }}
    location = /v1/traces {{ default_type application/x-protobuf; return 200 ''; }}
    location = /metrics {{ root {www}; types {{ }} default_type text/plain; try_files /metrics.txt =404; }}
  }}
}}
""")
    logf = tmp / "engine.log"
    p = procs.start("engine", ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                    ENGINE_CPU, logf)
    wait_ready("engine nginx", p, port, logf)
    st, body = http_post(port, "/large")
    assert st == 200 and len(body) == LARGE_SIZE, (st, len(body))
    t = time.monotonic()
    st, body = http_post(port, "/slow")
    dt = time.monotonic() - t
    assert st == 200 and body == SMALL_BODY.encode() and dt >= 0.019, (st, body, dt)
    return p


# --------------------------------------------------------------------------- subjects

class Subject:
    def __init__(self, key: str, label: str) -> None:
        self.key, self.label = key, label
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.db: Path | None = None
        self.max_rss = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


def start_subject(s: Subject, procs: Procs, tmp: Path, engine_port: int, args) -> None:
    upstream = f"http://127.0.0.1:{engine_port}"
    if s.key == "A":
        s.port = engine_port
        return
    s.port = free_port()
    logf = tmp / f"{s.key}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if s.key in B_VARIANTS:
        s.db = tmp / f"pdp-{s.key}.db"
        extra = [a.replace("@ENGINE@", upstream) for a in [*B_VARIANTS[s.key], *shlex.split(args.pdp_args)]]
        if s.key == "Bt":
            env.update(OTEL_EXPORTER_OTLP_ENDPOINT=upstream, OTEL_SERVICE_NAME="pdp-observe-bench")
        if not any(a.startswith("--admin-listen") for a in extra):
            extra = ["--admin-listen", f"127.0.0.1:{free_port()}", *extra]  # default 9466 may be taken
        argv = [*shlex.split(args.pdp_cmd), "proxy", "--listen", f"127.0.0.1:{s.port}",
                "--upstream", upstream, "--db", str(s.db), *extra]
    elif s.key in ("C", "Cuv"):
        argv = [sys.executable, str(HERE / "baseline_proxy.py"), "--listen", f"127.0.0.1:{s.port}",
                "--upstream", upstream] + (["--uvloop"] if s.key == "Cuv" else [])
    elif s.key == "N":
        prefix = tmp / "nginxproxy"
        prefix.mkdir()
        prefix.chmod(0o755)
        conf = prefix / "nginx.conf"
        conf.write_text(f"""{nginx_common(prefix)}
  access_log {prefix}/access.log;
  upstream engine {{ server 127.0.0.1:{engine_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{s.port} backlog=4096;
    location / {{
      proxy_pass http://engine; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffers 64 16k; proxy_max_temp_file_size 0;
    }}
  }}
}}
""")
        argv = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    else:
        raise ValueError(s.key)
    log(f"starting {s.key} ({s.label}): {' '.join(argv)}")
    s.proc = procs.start(s.key, argv, PROXY_CPU, logf, env=env)
    wait_ready(s.label, s.proc, s.port, logf)


def pdp_available(args) -> tuple[bool, str]:
    try:
        r = subprocess.run([*shlex.split(args.pdp_cmd), "proxy", "--help"], capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, repr(e)
    if r.returncode != 0:
        lines = (r.stderr or r.stdout).strip().splitlines()
        return False, lines[-1] if lines else f"exit {r.returncode}"
    missing = [f for f in ("--listen", "--upstream", "--db") if f not in r.stdout]
    if missing:
        return False, f"`proxy --help` lacks {missing}"
    return True, ""


# --------------------------------------------------------------------------- SQLite "stored"

def db_count(db: Path | None, after: int = 0) -> tuple[int, int | None]:
    """(rows in exchanges, rows without a failure) inserted after row ``seq`` ``after`` — 0 if the
    db/table does not exist yet. Counting by seq, not all rows, keeps the figure right when
    retention (--max-db-size) prunes the oldest rows during a run."""
    if db is None or not db.exists():
        return 0, None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            n = con.execute("SELECT count(*) FROM exchanges WHERE seq > ?", (after,)).fetchone()[0]
            cols = [r[1] for r in con.execute("PRAGMA table_info(exchanges)")]
            ok = None
            if "failure" in cols:
                ok = con.execute("SELECT count(*) FROM exchanges WHERE seq > ? AND (failure IS NULL OR failure = '')",
                                 (after,)).fetchone()[0]
            return n, ok
        finally:
            con.close()
    except sqlite3.Error as e:
        if "no such table" in str(e):
            return 0, None
        raise


def db_counters(db: Path | None) -> dict[str, int]:
    if db is None or not db.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return dict(con.execute("SELECT name, value FROM counters").fetchall())
        finally:
            con.close()
    except sqlite3.Error:
        return {}


def db_last_seq(db: Path | None) -> int:
    if db is None or not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute("SELECT COALESCE(MAX(seq), 0) FROM exchanges").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def wait_db_stable(db: Path | None, quiet: float = 1.0, timeout: float = 60.0,
                   after: int = 0) -> tuple[int, int | None, float]:
    """Poll until the row count has not changed for `quiet` s; returns (count, ok, seconds waited)."""
    t0 = time.monotonic()
    last, last_change = db_count(db, after), time.monotonic()
    while time.monotonic() - t0 < timeout:
        time.sleep(0.2)
        cur = db_count(db, after)
        if cur[0] != last[0]:
            last, last_change = cur, time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            break
    return last[0], last[1], round(max(0.0, last_change - t0), 2)


# --------------------------------------------------------------------------- wrk

LUA = r"""
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } bench_ts; int clock_gettime(int, bench_ts *); ]]
local ts = ffi.new("bench_ts")
local function now_ms() ffi.C.clock_gettime(1, ts); return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6 end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.body = [==[@BODY@]==]

-- BENCH_RATE > 0: pace the whole thread to that many requests/s (absolute schedule)
local rate = tonumber(os.getenv("BENCH_RATE") or "0")
if rate > 0 then
  local start, n = nil, 0
  function delay()
    local t = now_ms()
    if start == nil then start = t end
    n = n + 1
    local d = start + n * 1000.0 / rate - t
    if d < 0 then return 0 end
    return d
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d," ..
    "\"max_us\":%d,\"mean_us\":%.1f,\"err_connect\":%d,\"err_read\":%d,\"err_write\":%d,\"err_status\":%d,\"err_timeout\":%d}\n",
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


class Bench:
    def __init__(self, args, tmp: Path, procs: Procs, engine: subprocess.Popen) -> None:
        self.args, self.tmp, self.procs, self.engine = args, tmp, procs, engine
        body = (HERE / "qpe_findmany_request.json" if args.correlation else REQUEST_BODY_FILE).read_text()
        assert "]==]" not in body
        self.lua = tmp / "prisma_post.lua"
        self.lua.write_text(LUA.replace("@BODY@", body))
        self.runs: list[dict] = []
        self.subjects: list[Subject] = []

    def our_cpu(self) -> float:
        """CPU seconds of everything the benchmark runs (engine, all subjects, waited wrk, this process)."""
        return (children_cpu() + self_cpu() + tree_cpu(self.engine.pid)
                + sum(tree_cpu(s.pid) for s in self.subjects if s.pid))

    def wait_quiet(self) -> None:
        """Wait (up to --quiet-wait s) until other processes use less than --noise-limit of a core."""
        t0, warned = time.monotonic(), False
        while True:
            b0, o0, w0 = sys_cpu()[0], self.our_cpu(), time.monotonic()
            time.sleep(1.0)
            out = max(0.0, (sys_cpu()[0] - b0) - (self.our_cpu() - o0)) / (time.monotonic() - w0)
            if out <= self.args.noise_limit:
                if warned:
                    log(f"  machine quiet again after {time.monotonic() - t0:.0f}s")
                return
            if time.monotonic() - t0 > self.args.quiet_wait:
                log(f"  still busy after {self.args.quiet_wait}s (others use {out:.2f} core); going on")
                return
            if not warned:
                log(f"  waiting for other processes to calm down (they use {out:.2f} core)")
                warned = True

    def wrk(self, port: int, path: str, conns: int, duration: float, rate: float = 0) -> dict:
        argv = ["taskset", "-c", str(WRK_CPU), "wrk", "-t1", f"-c{conns}", f"-d{int(duration)}s",
                "--latency", "--timeout", "5s", "-s", str(self.lua), f"http://127.0.0.1:{port}{path}"]
        env = dict(os.environ, BENCH_RATE=str(int(rate)))
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True, env=env)
        try:
            out, _ = p.communicate(timeout=duration + 30)
        except BaseException:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
            raise
        line = next((ln for ln in out.splitlines() if ln.startswith("BENCHJSON ")), None)
        if p.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({p.returncode}):\n{out}")
        r = json.loads(line[len("BENCHJSON "):])
        r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
        r["errors"] = sum(r[k] for k in r if k.startswith("err_"))
        return r

    def measure(self, s: Subject, scenario: str, path: str, conns: int, duration: float,
                rnd: int, rate: float = 0, record: bool = True) -> dict:
        """One wrk run with CPU accounting (and the stored count for B); re-run if the host was noisy."""
        for attempt in range(self.args.max_reruns + 1):
            if s.proc is not None and s.proc.poll() is not None:
                raise RuntimeError(f"{s.label} died (rc {s.proc.returncode}):\n{tail(self.tmp / f'{s.key}.log')}")
            if s.db:
                wait_db_stable(s.db)
            mark = db_last_seq(s.db)  # rows after it are this run's
            k0 = db_counters(s.db)
            if self.args.noise_limit < 1e9:
                self.wait_quiet()
            b0, st0 = sys_cpu()
            o0, c0, e0, p0 = self.our_cpu(), children_cpu(), tree_cpu(self.engine.pid), tree_cpu(s.pid)
            m0 = proc_cpu(s.pid)
            t0 = time.monotonic()
            r = self.wrk(s.port, path, conns, duration, rate)
            wall = time.monotonic() - t0
            b1, st1 = sys_cpu()
            o1, c1, e1, p1 = self.our_cpu(), children_cpu(), tree_cpu(self.engine.pid), tree_cpu(s.pid)
            m1 = proc_cpu(s.pid)
            ours = o1 - o0
            r.update(subject=s.key, scenario=scenario, round=rnd, conns=conns, path=path, attempt=attempt,
                     wall_s=round(wall, 3), rate_target=rate or None,
                     wrk_cpu_s=round(c1 - c0, 3), engine_cpu_s=round(e1 - e0, 3),
                     proxy_cpu_s=round(p1 - p0, 3) if s.pid else None,
                     proxy_cpu_us_per_req=round((p1 - p0) / r["requests"] * 1e6, 1) if s.pid and r["requests"] else None,
                     # the forwarding process alone (its recorder child, if any, excluded)
                     main_cpu_us_per_req=round((m1 - m0) / r["requests"] * 1e6, 1) if s.pid and r["requests"] else None,
                     outside_cpu_core=round(max(0.0, (b1 - b0) - ours) / wall, 3),
                     steal_core=round((st1 - st0) / wall, 3))
            if s.pid:
                s.max_rss = max(s.max_rss, tree_rss_mb(s.pid))
                r["proxy_rss_mb"] = round(tree_rss_mb(s.pid), 1)
            if s.db is not None:
                n1, ok1, drain = wait_db_stable(s.db, after=mark)
                k1 = db_counters(s.db)
                # completed exchanges (failure IS NULL) vs requests wrk completed; rows for requests wrk
                # cut off at the end of the run carry failure=client_abort and are counted apart
                stored = n1 if ok1 is None else ok1
                r.update(stored=stored, stored_rows=n1, stored_pct=round(100.0 * stored / max(1, r["requests"]), 2),
                         drain_s=drain, counters_delta={k: v - k0.get(k, 0) for k, v in k1.items() if v != k0.get(k, 0)})
            msg = (f"  r{rnd} {s.key:<3} {scenario:<18} c={conns:<3} rps={r['rps']:9.0f} "
                   f"p50={r['p50_us'] / 1000:6.3f}ms p99={r['p99_us'] / 1000:6.3f}ms")
            if r.get("proxy_cpu_us_per_req") is not None:
                msg += f" cpu={r['proxy_cpu_us_per_req']:.0f}us/req (main {r['main_cpu_us_per_req']:.0f})"
            if "stored" in r:
                msg += (f" stored={r['stored']}/{r['requests']} ({r['stored_pct']:.2f}%, {r['stored_rows']} rows, "
                        f"drain {r['drain_s']}s)")
                if r["counters_delta"]:
                    msg += f" counters+={r['counters_delta']}"
            if r["errors"]:
                msg += f" ERRORS={r['errors']} (status {r['err_status']}, timeout {r['err_timeout']})"
            noisy = r["outside_cpu_core"] > self.args.noise_limit
            if noisy:
                msg += f" NOISY (outside {r['outside_cpu_core']:.2f} core)"
            log(msg)
            if not noisy or attempt == self.args.max_reruns:
                r["noisy"] = noisy
                if record:
                    self.runs.append(r)
                return r
            log("  re-running (other processes used more than the noise limit)")
        raise AssertionError("unreachable")

    def subject_block(self, s: Subject, rnd: int) -> None:
        a = self.args
        log(f"round {rnd}: {s.key} ({s.label}) warm-up {a.warmup}s")
        small = "/query" if a.correlation else "/fast"
        self.wrk(s.port, small, 32, a.warmup)
        if s.db:
            wait_db_stable(s.db)
        self.measure(s, "small_c32", small, 32, a.duration, rnd)
        if a.correlation and s.key != "A":
            # below saturation, where CPU per request is not inflated by a starved client: the
            # proxy process's own CPU per request is what bounds its throughput on its core
            self.measure(s, "fixed_rate_c32", small, 32, a.duration, rnd, rate=a.fixed_rate)
        self.measure(s, "small_c1", small, 1, a.duration, rnd)
        self.measure(s, "slow20ms_c1", "/slow", 1, a.duration, rnd)
        # "large after burst": grow the upstream pool with 32 conns, then fetch 1 MiB bodies
        self.measure(s, "burst_c32", "/fast", 32, a.burst, rnd)
        self.measure(s, f"large_after_burst_c{a.large_conns}", "/large", a.large_conns, a.duration, rnd)


# --------------------------------------------------------------------------- report

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def machine_info(args) -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")

    def ver(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception as e:  # noqa: BLE001
            return f"? ({e})"

    import aiohttp
    try:
        import uvloop
        uv = uvloop.__version__
    except ImportError:
        uv = None
    try:
        cc = open("/proc/sys/net/ipv4/tcp_congestion_control").read().strip()
    except OSError:
        cc = "?"
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        rev = "?"
    import hashlib
    h = hashlib.sha256()
    for f in sorted((REPO / "pdp_observe").rglob("*.py")):
        h.update(f.read_bytes())
    rev += f" (sources sha256 {h.hexdigest()[:10]})"
    import sysconfig
    cargs = sysconfig.get_config_var("CONFIG_ARGS") or ""
    flags = [f for f in ("--enable-optimizations", "--with-lto") if f in cargs]

    def calib(py):
        # pure-Python speed of an interpreter on the proxy core: ~2x between a PGO/LTO build and a plain one
        try:
            r = subprocess.run(["taskset", "-c", str(PROXY_CPU), py, "-m", "timeit", "-r", "5", "-s", "d={'a': 1}",
                                "for i in range(1000): d.get('a'); str(i)"], capture_output=True, text=True, timeout=60)
            m = re.search(r"best of \d+: ([\d.]+) (usec|msec)", r.stdout)
            return round(float(m.group(1)) * (1000 if m.group(2) == "msec" else 1), 1) if m else None
        except Exception:  # noqa: BLE001
            return None

    calibration = {"this python (µs)": calib(sys.executable)}
    if os.path.exists("/usr/bin/python3") and os.path.realpath("/usr/bin/python3") != os.path.realpath(sys.executable):
        calibration["/usr/bin/python3 (µs)"] = calib("/usr/bin/python3")
    return {"python_build": " ".join(flags) or "no PGO/LTO (--enable-optimizations absent)",
            "python_calibration": calibration,
            "nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "aiohttp": aiohttp.__version__, "uvloop": uv,
            "nginx": ver(["nginx", "-v"]), "wrk": ver(["wrk", "-v"]), "tcp_congestion_control": cc,
            "pdp_observe_git": rev, "loadavg": open("/proc/loadavg").read().split()[:3]}


def summarize(runs: list[dict], subjects: list[str], large_key: str) -> dict:
    by = {}
    for r in runs:
        by.setdefault((r["subject"], r["scenario"]), {})[r["round"]] = r

    def get(subj, sc, field):
        return [r.get(field) for r in by.get((subj, sc), {}).values()]

    def paired(subj, ref, sc, field, op):
        a, b = by.get((subj, sc), {}), by.get((ref, sc), {})
        return med([op(a[k][field], b[k][field]) for k in a if k in b])

    diff = lambda x, y: (x - y) / 1000.0  # noqa: E731  µs -> ms
    ratio = lambda x, y: x / y if y else None  # noqa: E731
    out = {}
    for s in subjects:
        d = {
            "rps_c32": med(get(s, "small_c32", "rps")),
            "x_direct_c32": paired(s, "A", "small_c32", "rps", ratio),
            "x_C_c32": paired(s, "C", "small_c32", "rps", ratio),
            "x_Cuv_c32": paired(s, "Cuv", "small_c32", "rps", ratio),
            "x_Br_c32": paired(s, "Br", "small_c32", "rps", ratio),
            "added_p50_c1_vs_Br_ms": paired(s, "Br", "small_c1", "p50_us", diff),
            "p99_c32_ms": (med(get(s, "small_c32", "p99_us")) or 0) / 1000,
            "p50_c1_ms": (med(get(s, "small_c1", "p50_us")) or 0) / 1000,
            "p99_c1_ms": (med(get(s, "small_c1", "p99_us")) or 0) / 1000,
            "added_p50_c1_ms": paired(s, "A", "small_c1", "p50_us", diff),
            "added_p99_c1_ms": paired(s, "A", "small_c1", "p99_us", diff),
            "p50_slow_ms": (med(get(s, "slow20ms_c1", "p50_us")) or 0) / 1000,
            "added_p50_slow_ms": paired(s, "A", "slow20ms_c1", "p50_us", diff),
            "added_p99_slow_ms": paired(s, "A", "slow20ms_c1", "p99_us", diff),
            "rps_large": med(get(s, large_key, "rps")),
            "x_direct_large": paired(s, "A", large_key, "rps", ratio),
            "p99_large_ms": (med(get(s, large_key, "p99_us")) or 0) / 1000,
            "cpu_us_per_req": med(get(s, "small_c32", "proxy_cpu_us_per_req")),
            "main_cpu_fixed": med(get(s, "fixed_rate_c32", "main_cpu_us_per_req")),
            "x_Br_main_cpu_fixed": paired(s, "Br", "fixed_rate_c32", "main_cpu_us_per_req",
                                          lambda x, y: y / x if x else None),
            "p50_fixed_ms": (med(get(s, "fixed_rate_c32", "p50_us")) or 0) / 1000,
            "p99_fixed_ms": (med(get(s, "fixed_rate_c32", "p99_us")) or 0) / 1000,
            "errors": sum(r["errors"] for (subj, _), rr in by.items() if subj == s for r in rr.values()),
            "noisy_runs": sum(bool(r.get("noisy")) for (subj, _), rr in by.items() if subj == s for r in rr.values()),
        }
        if s in B_VARIANTS:
            for sc in ("small_c32", "small_c1", "slow20ms_c1", large_key, "fixed_rate_c32"):
                d[f"stored_pct_{sc}"] = med(get(s, sc, "stored_pct"))
            d["drain_s_c32"] = med(get(s, "small_c32", "drain_s"))
        out[s] = d
    return out


def fmt(x, spec, suffix=""):
    return "—" if x is None else format(x, spec) + suffix


def render(info: dict, cfg: dict, summ: dict, subjects: dict, eighties: dict, large_key: str) -> str:
    eighty = eighties.get("B")
    L = []
    L.append("## Machine")
    L.append(f"- nproc {info['nproc']}, CPU {info['cpu_model']}, kernel {info['kernel']}, "
             f"TCP cc {info['tcp_congestion_control']}, loadavg at start {' '.join(info['loadavg'])}")
    L.append(f"- Python {info['python']} ({sys.executable}; build: {info['python_build']}; "
             f"pure-Python calibration loop: {', '.join(f'{k} {v}' for k, v in info['python_calibration'].items())})")
    L.append(f"- aiohttp {info['aiohttp']}, uvloop {info['uvloop']}, {info['nginx']}, "
             f"{info['wrk']}, pdp_observe @ {info['pdp_observe_git']}")
    L.append(f"- rounds {cfg['rounds']}, {cfg['duration']} s runs, warm-up {cfg['warmup']} s, "
             f"burst {cfg['burst']} s; wrk+engine on core {WRK_CPU}, proxy on core {PROXY_CPU}; "
             f"request body {cfg['request_bytes']} B, response {len(SMALL_BODY)} B / 1 MiB")
    L.append("")
    L.append("## Results (medians over rounds; ratios and added latency paired per round)")
    L.append("")
    L.append("| subject | rps @32 | × direct | × C | × Cuv | p50 / p99 @1 (ms) | added p50 / p99 @1 (ms) "
             "| added p50 / p99 @1, 20 ms engine (ms) | large after burst rps | × direct | CPU µs/req | RSS MB |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k, d in summ.items():
        s = subjects[k]
        L.append(
            f"| {k}: {s.label} | {fmt(d['rps_c32'], ',.0f')} | {fmt(d['x_direct_c32'], '.3f')} | "
            f"{fmt(d['x_C_c32'], '.3f')} | {fmt(d['x_Cuv_c32'], '.3f')} | "
            f"{d['p50_c1_ms']:.3f} / {d['p99_c1_ms']:.3f} | "
            f"{fmt(d['added_p50_c1_ms'], '+.3f')} / {fmt(d['added_p99_c1_ms'], '+.3f')} | "
            f"{fmt(d['added_p50_slow_ms'], '+.3f')} / {fmt(d['added_p99_slow_ms'], '+.3f')} | "
            f"{fmt(d['rps_large'], ',.0f')} | {fmt(d['x_direct_large'], '.3f')} | "
            f"{fmt(d['cpu_us_per_req'], '.0f')} | {fmt(s.max_rss or None, '.0f')} |")
    flags = [f"{k}: {d['errors']} wrk errors" for k, d in summ.items() if d["errors"]]
    flags += [f"{k}: {d['noisy_runs']} noisy runs kept" for k, d in summ.items() if d["noisy_runs"]]
    if flags:
        L.append("")
        L.append("Flags: " + "; ".join(flags))
    if "B" in summ:
        d = summ["B"]
        L.append("")
        L.append("## pdp_observe recording (B)")
        L.append("")
        L.append("| run | stored / completed (median %) |")
        L.append("|---|---|")
        for sc, name in (("small_c32", "max rate, 32 conns"), ("small_c1", "1 conn"),
                         ("slow20ms_c1", "1 conn, 20 ms engine"), (large_key, "1 MiB after burst")):
            L.append(f"| {name} | {fmt(d.get(f'stored_pct_{sc}'), '.2f', ' %')} |")
        for key, e in eighties.items():
            L.append(f"| {key} at 80 % of its max: target {e['rate_target']:,.0f} rps, got {e['rps']:,.0f} rps, "
                     f"p50 {e['p50_us'] / 1000:.3f} / p99 {e['p99_us'] / 1000:.3f} ms, "
                     f"drain {e['drain_s']} s | **{e['stored']} / {e['requests']} = "
                     f"{e['stored_pct']:.2f} %** |")
        L.append("")
        L.append("(stored = rows in `exchanges` with no failure added during the run, counted once the writer went "
                 "quiet, vs requests wrk completed; a response the proxy finished but wrk had not read when it "
                 "stopped is stored too, so up to +1 row per connection above 100 % is normal.)")
        L.append("")
        L.append("## Targets for pdp_observe")
        xc = d["x_C_c32"]
        L.append(f"- throughput with recording ≥ 1.0× bare aiohttp (never < 0.85×): B/C = {fmt(xc, '.3f')} "
                 f"→ {'PASS' if xc and xc >= 1.0 else ('WARN (≥0.85)' if xc and xc >= 0.85 else 'FAIL')}")
        ap = d["added_p50_c1_ms"]
        L.append(f"- added p50 @1 conn ≤ 0.35 ms: {fmt(ap, '+.3f')} ms → {'PASS' if ap is not None and ap <= 0.35 else 'FAIL'}")
        if eighty:
            ok = eighty["stored"] >= eighty["requests"]
            L.append(f"- 100 % stored at 80 % of max rate: {eighty['stored_pct']:.2f} % → {'PASS' if ok else 'FAIL'}")
        xl, cl = d["x_direct_large"], summ.get("C", {}).get("x_direct_large")
        L.append(f"- large after burst: B {fmt(xl, '.3f')}× direct (C {fmt(cl, '.3f')}×; nginx kept 0.86× in performance.md)")
    if "Bt" in summ and "Br" in summ:
        d = summ["Bt"]
        x, ap = d["x_Br_c32"], d["added_p50_c1_vs_Br_ms"]
        L.append("")
        L.append("## Correlation cost (Bt: all correlation on, vs Br: recording only)")
        L.append(f"- throughput Bt/Br = {fmt(x, '.3f')} (target ≥ 0.85: all correlation costs ≤ 15 %) → "
                 f"{'PASS' if x and x >= 0.85 else 'FAIL'}; Bt/C = {fmt(d['x_C_c32'], '.3f')}, "
                 f"Br/C = {fmt(summ['Br']['x_C_c32'], '.3f')}")
        L.append(f"- added p50 @1 conn, Bt vs Br: {fmt(ap, '+.3f')} ms; CPU µs/req Bt "
                 f"{fmt(d['cpu_us_per_req'], '.0f')} vs Br {fmt(summ['Br']['cpu_us_per_req'], '.0f')}")
        for k in ("Br", "Bt"):
            L.append(f"- {k} stored at max rate: {fmt(summ[k].get('stored_pct_small_c32'), '.2f', ' %')}")
        cap = d.get("x_Br_main_cpu_fixed")
        L.append(f"- at a fixed {cfg.get('fixed_rate', 0):,} rps (no saturation): forwarding-process CPU per request "
                 f"Bt {fmt(d.get('main_cpu_fixed'), '.0f')} µs vs Br {fmt(summ['Br'].get('main_cpu_fixed'), '.0f')} µs "
                 f"→ capacity Bt/Br = {fmt(cap, '.3f')} ({'PASS' if cap and cap >= 0.85 else 'FAIL'} vs 0.85); "
                 f"p50/p99 Bt {d['p50_fixed_ms']:.3f}/{d['p99_fixed_ms']:.3f} ms, "
                 f"Br {summ['Br']['p50_fixed_ms']:.3f}/{summ['Br']['p99_fixed_ms']:.3f} ms")
        for k in ("Br", "Bt"):
            L.append(f"- {k} stored at the fixed rate: {fmt(summ[k].get('stored_pct_fixed_rate_c32'), '.2f', ' %')}")
    return "\n".join(L)


# --------------------------------------------------------------------------- profile

def profile_b(bench: Bench, s: Subject, out: Path, seconds: int, subprocesses: bool = True) -> dict | None:
    pyspy = shutil.which("py-spy", path=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    if not pyspy:
        log("py-spy not found (pip install py-spy into the venv); skipping profile")
        return None
    raw = out.with_suffix(".collapsed.txt")
    argv = ["taskset", "-c", str(WRK_CPU), pyspy, "record", "--pid", str(s.pid), "--rate", "200",
            "--duration", str(seconds), "--nonblocking", *(["--subprocesses"] if subprocesses else []),
            *(["--gil"] if bench.args.profile_gil else []),
            "--format", "raw", "-o", str(raw)]
    log(f"profiling {s.key} with py-spy for {seconds}s during a 32-conn run -> {raw}")
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    time.sleep(0.5)
    bench.wrk(s.port, "/query" if bench.args.correlation else "/fast", 32, seconds + 1)
    try:
        pout, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        pout, _ = p.communicate()
    if not raw.exists():
        log(f"py-spy produced nothing:\n{pout}")
        return None
    self_c, incl_c, total = {}, {}, 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        n = int(n)
        # "func (path/file.py:123)" -> "func (file.py)": aggregate per function, not per line
        frames = [re.sub(r"\(([^()]*/)?([^()/:]+):\d+\)$", r"(\2)", f) for f in stack.split(";")]
        total += n
        self_c[frames[-1]] = self_c.get(frames[-1], 0) + n
        for f in set(frames):
            incl_c[f] = incl_c.get(f, 0) + n
    top_self = sorted(self_c.items(), key=lambda kv: -kv[1])[:25]
    top_incl = sorted(incl_c.items(), key=lambda kv: -kv[1])[:40]
    lines = [f"py-spy: {total} samples ({raw})", "", "top self (own time):"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in top_self]
    lines += ["", "top inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in top_incl]
    text = "\n".join(lines)
    out.write_text(text + "\n")
    return {"samples": total, "raw": str(raw), "summary": str(out),
            "top_self": [[f, n] for f, n in top_self], "top_inclusive": [[f, n] for f, n in top_incl]}


# --------------------------------------------------------------------------- main

LABELS = {"A": "direct (no proxy)", "B": "pdp_observe, recording (recorder process nice +10, cores 0-1)",
          "Bp": "pdp_observe, recording (recorder process pinned to core 0)",
          "Bidle": "pdp_observe, recording (recorder process SCHED_IDLE on cores 0-1)",
          "B1": "pdp_observe, recording, all on core 1", "Bi": "pdp_observe, inline recorder thread",
          "Bs": "pdp_observe, recording, the recorder commits to SQLite itself (no store process)",
          "Bsp": "pdp_observe, recording, rows committed by a store process (--store-process)",
          "C": "bare aiohttp", "Cuv": "bare aiohttp + uvloop", "N": "nginx proxy, access log"}
# pdp_observe variants. B: the recorder process as deployed without pinning: nice +10, free to
# run on either core, so it takes the idle time beside wrk and the engine and beside the proxy
# (recording may then cost the proxy's core a little at saturation). Bp: the recorder pinned
# beside wrk and the engine, so the proxy's core runs only the hot path (higher max rate, but
# the recorder only gets what wrk and nginx leave on core 0). Bidle: SCHED_IDLE on both cores.
# B1: the recorder process inherits the proxy's core (all pdp_observe CPU on one core).
# Bi: --recorder inline (one process, a worker thread). Bs: B without the store process, Bsp: B
# with it (B's default, auto, leaves it off on a 2-CPU recorder: then B and Bs are the same).
B_VARIANTS = {"B": ["--recorder-cpus", f"{WRK_CPU},{PROXY_CPU}"],
              "Bp": ["--recorder-cpus", str(WRK_CPU)],
              "Bidle": ["--recorder-cpus", f"{WRK_CPU},{PROXY_CPU}", "--recorder-idle"],
              "B1": [], "Bi": ["--recorder", "inline"],
              "Bs": ["--recorder-cpus", f"{WRK_CPU},{PROXY_CPU}", "--no-store-process"],
              "Bsp": ["--recorder-cpus", f"{WRK_CPU},{PROXY_CPU}", "--store-process"],
              "Br": ["--recorder-cpus", str(WRK_CPU), "--no-capture-telemetry", "--no-propagate-trace"],
              "Bt": ["--recorder-cpus", str(WRK_CPU), "--engine-metrics-url", "@ENGINE@/metrics"],
              "Bc": ["--recorder-cpus", str(WRK_CPU), "--no-propagate-trace"],
              "Bx": ["--recorder-cpus", str(WRK_CPU)]}
# Br: recording only (no capture header, no traceparent). Bt: all correlation on — capture
# header + stripping, traceparent, spans exported over OTLP (to the engine nginx, which answers
# 200), engine /metrics scraped every second (the seed's real sample), metrics with exemplars.
LABELS.update({"Br": "pdp_observe, recording only (no correlation)",
               "Bt": "pdp_observe, all correlation on (telemetry, traces+OTLP, scrape)",
               # parts of Bt, to see where its cost goes (not run by default)
               "Bc": "pdp_observe, telemetry capture only (no traceparent, no OTLP, no scrape)",
               "Bx": "pdp_observe, telemetry capture + traceparent (no OTLP, no scrape)"})


def run(args, tmp: Path, procs: Procs) -> int:
    info = machine_info(args)
    log(f"machine: {info}")
    keys = [k.strip() for k in args.subjects.split(",") if k.strip()]
    for k in keys:
        if k not in LABELS:
            raise SystemExit(f"unknown subject {k!r}; choose from {','.join(LABELS)}")
    if "A" not in keys:
        keys.insert(0, "A")
    if any(k in B_VARIANTS for k in keys):
        ok, why = pdp_available(args)
        if not ok:
            log(f"pdp_observe unavailable, skipping its subjects: {why}")
            keys = [k for k in keys if k not in B_VARIANTS]
    subjects = {k: Subject(k, LABELS[k]) for k in keys}

    engine_port = free_port()
    engine = start_engine(procs, tmp, engine_port)
    log(f"engine nginx up on :{engine_port} (pid {engine.pid}, core {ENGINE_CPU})")
    for s in subjects.values():
        start_subject(s, procs, tmp, engine_port, args)
    bench = Bench(args, tmp, procs, engine)
    bench.subjects = list(subjects.values())
    large_key = f"large_after_burst_c{args.large_conns}"

    for rnd in range(1, args.rounds + 1):
        log(f"=== round {rnd}/{args.rounds} ===")
        for s in subjects.values():
            bench.subject_block(s, rnd)

    summ = summarize(bench.runs, list(subjects), large_key)
    eighties: dict[str, dict] = {}
    paced = [] if args.no_eighty else [k for k in args.eighty_subjects.split(",") if k in subjects]
    for rep in range(1, args.eighty_repeat + 1):  # repeats interleave the subjects, like the rounds
        for key in paced:
            rate = args.eighty_rate or 0.8 * summ[key]["rps_c32"]
            what = f"a fixed {rate:.0f}" if args.eighty_rate else f"80 % of its max rate: {rate:.0f}"
            log(f"{key} at {what} rps, 32 conns, {args.duration}s (repeat {rep}/{args.eighty_repeat})")
            run80 = bench.measure(subjects[key], "rate80_c32", "/fast", 32, args.duration, rep, rate=rate,
                                  record=False)
            if key not in eighties or run80["stored_pct"] < eighties[key]["stored_pct"]:
                eighties[key] = run80  # the target is 100 %: the worst repeat is the one reported
    eighty = eighties.get("B")
    if args.rounds == 0:  # paced runs only (--eighty-rate): no max-rate table to render
        for key, r in eighties.items():
            print(f"{key}: worst of {args.eighty_repeat} at {r['rate_target']:.0f} rps: stored "
                  f"{r['stored']}/{r['requests']} = {r['stored_pct']:.2f} %, CPU {r['proxy_cpu_us_per_req']:.0f} "
                  f"µs/req (main {r['main_cpu_us_per_req']:.0f})", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"machine": info, "rate80_by_subject": eighties,
                                                   "runs": bench.runs}, indent=2))
        return 0
    prof = None
    if args.profile and args.profile_subject in subjects:
        prof = profile_b(bench, subjects[args.profile_subject], Path(args.profile), args.profile_seconds,
                         subprocesses=not args.profile_main_only)

    cfg = {"rounds": args.rounds, "duration": args.duration, "warmup": args.warmup, "burst": args.burst,
           "large_conns": args.large_conns, "request_bytes": len((HERE / "qpe_findmany_request.json" if args.correlation else REQUEST_BODY_FILE).read_bytes()),
           "response_bytes": len(SMALL_BODY), "subjects": list(subjects), "pdp_cmd": args.pdp_cmd,
           "pdp_args": args.pdp_args, "fixed_rate": args.fixed_rate if args.correlation else None}
    table = render(info, cfg, summ, subjects, eighties, large_key)
    print("\n" + table + "\n", flush=True)
    if prof:
        print(Path(prof["summary"]).read_text())
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": info, "config": cfg, "summary": summ, "rate80": eighty, "rate80_by_subject": eighties, "runs": bench.runs,
             "max_rss_mb": {k: s.max_rss for k, s in subjects.items()}, "profile": prof, "table_md": table},
            indent=2))
        log(f"wrote {args.json}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round, 3 s runs (smoke check)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--burst", type=int, default=3, help="seconds of 32-conn small load before the 1 MiB run")
    ap.add_argument("--large-conns", type=int, default=4)
    ap.add_argument("--subjects", default="A,B,C,Cuv", help="comma list of A,B,Bs,C,Cuv,N (and the variants Bsp,Bp,Bidle,B1,Bi,Br,Bt,Bc,Bx)")
    ap.add_argument("--pdp-cmd", default=str(VENV_BIN / "pdp-observe"))
    ap.add_argument("--pdp-args", default="", help="extra args for `pdp-observe proxy`")
    ap.add_argument("--correlation", action="store_true",
                    help="measure correlation's cost: small requests are Prisma 7 /query calls answered "
                         "with recorded real bodies (with telemetry when asked); subjects A,Br,Bt,C")
    ap.add_argument("--fixed-rate", type=int, default=1500,
                    help="--correlation: also measure each pdp_observe subject at this paced rate (rps) and compare "
                         "the forwarding process's CPU per request (default 1500)")
    ap.add_argument("--no-eighty", action="store_true", help="skip the 80 %%-of-max stored check")
    ap.add_argument("--eighty-subjects", default="B,Bsp",
                    help="subjects paced at 80 %% of their own max rate after the rounds (default B,Bsp: those of "
                         "them in --subjects; B is the target)")
    ap.add_argument("--eighty-rate", type=float, default=0,
                    help="pace the --eighty-subjects at this rate (rps) instead of 80 %% of each one's max "
                         "(compare variants at the same load; with --rounds 0 only these runs are made)")
    ap.add_argument("--eighty-repeat", type=int, default=1,
                    help="paced runs per subject, interleaved; the worst is reported (default 1)")
    ap.add_argument("--noise-limit", type=float, default=0.15, help="re-run when other processes used > this many cores")
    ap.add_argument("--max-reruns", type=int, default=2)
    ap.add_argument("--quiet-wait", type=float, default=120,
                    help="before each run, wait up to this long for other processes to go below --noise-limit")
    ap.add_argument("--profile", metavar="OUT.txt", help="after the runs, py-spy B during a 32-conn run; "
                    "writes a top-functions summary here and the collapsed stacks beside it")
    ap.add_argument("--profile-seconds", type=int, default=10)
    ap.add_argument("--profile-subject", default="B", help="which subject --profile samples (default B)")
    ap.add_argument("--profile-gil", action="store_true",
                    help="sample only threads holding the GIL (what a thread waiting for it costs is not CPU)")
    ap.add_argument("--profile-main-only", action="store_true",
                    help="sample only the forwarding process, not its recorder child")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, db) for inspection")
    ap.add_argument("--json", metavar="OUT.json")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup, args.burst = 1, 3, 1, 2
    if args.correlation and args.subjects == "A,B,C,Cuv":
        args.subjects, args.no_eighty = "A,Br,Bt,C", True
    for tool in ("nginx", "wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (apt-get install -y nginx-light wrk util-linux)")
    if not os.path.exists("/usr/lib/nginx/modules/ngx_http_echo_module.so"):
        raise SystemExit("nginx echo module missing (apt-get install -y libnginx-mod-http-echo)")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores (wrk+engine on core 0, proxy on core 1)")
    os.sched_setaffinity(0, {WRK_CPU})  # the harness stays off the proxy's core

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)  # also when started in the background with SIGINT ignored
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="pdp-bench-"))
    procs = Procs()
    rc = 1
    try:
        rc = run(args, tmp, procs)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        rc = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
