"""Real Prisma stacks: pinned npm projects, a throwaway PostgreSQL, Prisma servers, workloads.

Used by the demo (``pdp-observe demo``) and by the test suite. The npm projects ship inside the
package; they are installed in place in a source checkout, and into a per-user cache directory
(``$PDP_STACKS_DIR``, default ``~/.cache/pdp_observe/stacks-<version>``) when the package was
installed into site-packages.

Everything runs on 127.0.0.1. Every process started here is stopped by PID (its process group)
by ``stop()``, by the context managers, and — as a last resort — at interpreter exit.

Stacks (recorded names, see README.md):

=========  ==============================  ==========================  ===================
stack      server (``start_server`` kind)  client (``run_workload``)   npm project
=========  ==============================  ==========================  ===================
qpe72      ``qpe``                         ``prisma7``                 prisma7
qe619      ``engine``                      ``binary``                  prisma6
dp619      ``dataproxy``                   ``dataproxy``               prisma6
demo       ``demo`` (no PostgreSQL)        ``demo``                    prisma7
=========  ==============================  ==========================  ===================
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCE_DIR = Path(__file__).resolve().parent
SCHEMA_SQL = SOURCE_DIR / "schema" / "schema.sql"
_COPY_IGNORE = shutil.ignore_patterns("node_modules", "generated", "__pycache__", ".install.lock", "*.py")
PG_BIN = Path(os.environ.get("PDP_PG_BIN", "/usr/lib/postgresql/15/bin"))
API_KEY = "test"
HOST = "127.0.0.1"

#: stack -> (server kind, client kind)
STACKS: dict[str, tuple[str, str]] = {
    "qpe72": ("qpe", "prisma7"),
    "qe619": ("engine", "binary"),
    "dp619": ("dataproxy", "dataproxy"),
}

# Offline `prisma generate`: no schema engine, no engine download (docs: real-stack.md).
_GENERATE_ENV = {
    "PRISMA_SCHEMA_ENGINE_BINARY": "/bin/true",
    "PRISMA_ENGINES_CHECKSUM_IGNORE_MISSING": "1",
    "CHECKPOINT_DISABLE": "1",
    "PRISMA_HIDE_UPDATE_MESSAGE": "1",
}
_PRISMA_CLI = "node_modules/prisma/build/index.js"

#: project -> list of (generate argv tail, extra env, output dir that must exist afterwards)
_GENERATE: dict[str, list[tuple[list[str], dict[str, str], str]]] = {
    "prisma7": [(["generate", "--schema", "schema.prisma"], {}, "generated")],
    "prisma6": [
        (
            ["generate", "--schema", "binary/schema.prisma"],
            {"PRISMA_CLI_QUERY_ENGINE_TYPE": "binary", "PRISMA_QUERY_ENGINE_BINARY": "{dir}/query-engine"},
            "binary/generated",
        ),
        (
            ["generate", "--no-engine", "--schema", "dataproxy/schema.prisma"],
            # --no-engine still resolves a library engine path; any existing file will do.
            {"PRISMA_QUERY_ENGINE_LIBRARY": "/bin/true"},
            "dataproxy/generated",
        ),
    ],
}
_STAMP = "node_modules/.pdp-stamp"


class HarnessError(RuntimeError):
    """A harness step (install, start, workload) failed; the message says what and why."""


# --------------------------------------------------------------------------------------------
# process bookkeeping


_live: dict[int, "_Stoppable"] = {}
_live_lock = threading.Lock()


class _Stoppable:
    def stop(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def _register(obj: _Stoppable, pid: int) -> None:
    with _live_lock:
        _live[pid] = obj


def _unregister(pid: int) -> None:
    with _live_lock:
        _live.pop(pid, None)


@atexit.register
def stop_all() -> None:
    """Stop every process this module started that is still running (also run at exit)."""
    with _live_lock:
        items = list(_live.values())
    for obj in items:
        with contextlib.suppress(Exception):
            obj.stop()


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signals the process group led by ``proc`` (started with start_new_session) and reaps it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # Children that outlived the leader (same group) are killed too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _require_node() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise HarnessError(
            "node and npm are required for the real-Prisma stacks (Node.js 20 was used): "
            "install them, e.g. `apt-get install -y nodejs npm`"
        )
    return node, npm


# --------------------------------------------------------------------------------------------
# npm projects


def stacks_dir() -> Path:
    """Where the npm projects are installed: in place in a checkout, else a copy in a cache dir."""
    env = os.environ.get("PDP_STACKS_DIR")
    installed = any(part in ("site-packages", "dist-packages") for part in SOURCE_DIR.parts)
    if not env and not installed and os.access(SOURCE_DIR, os.W_OK):
        return SOURCE_DIR
    from pdp_observe import __version__  # noqa: PLC0415

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = Path(env) if env else cache / "pdp_observe" / f"stacks-{__version__}"
    shutil.copytree(SOURCE_DIR, target, ignore=_COPY_IGNORE, dirs_exist_ok=True)
    return target


def project_dir(name: str) -> Path:
    if name not in _GENERATE:
        raise HarnessError(f"unknown npm project {name!r}; expected one of {sorted(_GENERATE)}")
    return stacks_dir() / name


#: files (relative to the project) whose content decides whether install + generate must re-run
_INSTALL_INPUTS = {
    "prisma7": ["package.json", "package-lock.json", "schema.prisma"],
    "prisma6": ["package.json", "package-lock.json", "binary/schema.prisma", "dataproxy/schema.prisma",
                "query-engine"],
}


def _install_hash(pdir: Path) -> str:
    h = hashlib.sha256()
    for rel in _INSTALL_INPUTS[pdir.name]:
        p = pdir / rel
        h.update(rel.encode() + b"\0")
        h.update(p.read_bytes() if p.exists() else b"<missing>")
        h.update(b"\0")
    h.update(json.dumps(_GENERATE[pdir.name], sort_keys=True).encode())
    return h.hexdigest()


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> None:
    full_env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false",
                "npm_config_audit": "false", **(env or {})}
    try:
        cp = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise HarnessError(f"timed out after {timeout}s: {' '.join(argv)} (in {cwd})") from e
    if cp.returncode != 0:
        tail = "\n".join((cp.stdout + "\n" + cp.stderr).strip().splitlines()[-40:])
        raise HarnessError(f"command failed ({cp.returncode}): {' '.join(argv)} (in {cwd})\n{tail}")


def ensure_installed(name: str, *, force: bool = False) -> Path:
    """Installs npm project ``name`` ("prisma7" or "prisma6") and generates its clients offline.

    ``npm ci --ignore-scripts`` (``npm install`` when there is no lock file), then
    ``prisma generate`` with the offline environment. Idempotent: skipped while the stamp file
    ``node_modules/.pdp-stamp`` matches the hash of package.json, package-lock.json and the
    schemas. Safe to call from parallel processes (file lock). Returns the project directory.
    """
    node, npm = _require_node()
    pdir = project_dir(name)
    wanted = _install_hash(pdir)
    stamp = pdir / _STAMP
    outputs_ok = lambda: all((pdir / out).is_dir() for _, _, out in _GENERATE[name])  # noqa: E731
    if not force and stamp.exists() and stamp.read_text().strip() == wanted and outputs_ok():
        return pdir
    with open(pdir / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and stamp.exists() and stamp.read_text().strip() == wanted and outputs_ok():
            return pdir
        if (pdir / "package-lock.json").exists():
            _run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], pdir)
        else:
            _run([npm, "install", "--ignore-scripts", "--no-audit", "--no-fund"], pdir)
        for argv_tail, extra_env, out in _GENERATE[name]:
            shutil.rmtree(pdir / out, ignore_errors=True)
            env = {k: v.format(dir=pdir) for k, v in {**_GENERATE_ENV, **extra_env}.items()}
            _run([node, _PRISMA_CLI, *argv_tail], pdir, env=env, timeout=120)
            if not (pdir / out).is_dir():
                raise HarnessError(f"prisma generate did not create {pdir / out}")
        stamp.write_text(wanted + "\n")
    return pdir


# --------------------------------------------------------------------------------------------
# PostgreSQL


@dataclass
class Postgres(_Stoppable):
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1 (superuser ``postgres``, trust auth)."""

    port: int
    dbname: str
    root: Path
    proc: subprocess.Popen
    log_path: Path
    host: str = HOST
    user: str = "postgres"
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        """URL of the default database (schema applied)."""
        return self.url_for(self.dbname)

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def psql(self, sql: str | None = None, *, dbname: str | None = None, file: Path | None = None) -> str:
        """Runs SQL (or a file) with psql (ON_ERROR_STOP); returns its stdout."""
        argv = [str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", dbname or self.dbname]
        argv += ["-f", str(file)] if file else ["-c", sql or ""]
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PGCONNECT_TIMEOUT": "10"})
        if cp.returncode != 0:
            raise HarnessError(f"psql failed: {cp.stderr.strip()}")
        return cp.stdout

    def create_database(self, dbname: str, *, schema: bool = True) -> str:
        """Creates database ``dbname`` (with the User/Post tables unless schema=False); returns its URL."""
        self.psql(f'CREATE DATABASE "{dbname}"', dbname="postgres")
        if schema:
            self.psql(dbname=dbname, file=SCHEMA_SQL)
        return self.url_for(dbname)

    def reset(self, dbname: str | None = None) -> None:
        """Empties User/Post and restarts their id sequences, so a workload gets the same ids again."""
        self.psql('TRUNCATE "Post", "User" RESTART IDENTITY CASCADE', dbname=dbname)

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster PID), then removes the cluster directory."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                _kill_group(self.proc, signal.SIGKILL)
        _unregister(self.proc.pid)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Postgres":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pg_user() -> dict[str, Any]:
    """Popen kwargs that drop to the `postgres` user when running as root (initdb refuses root)."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError as e:
        raise HarnessError("running as root but there is no `postgres` user to run initdb as") from e
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def start_postgres(tmp_path: Path | str | None = None, *, dbname: str = "pdp", timeout: float = 60) -> Postgres:
    """Starts a throwaway cluster (initdb + postgres as the `postgres` user when root).

    Listens on 127.0.0.1 and a free port with fsync off; creates database ``dbname`` and applies
    pdp_observe/stacks/schema/schema.sql. The cluster lives in a fresh directory under /tmp (the
    postgres user must be able to reach it; pytest's tmp_path is root-only); its server log is
    written to ``tmp_path/postgres.log`` when tmp_path is given. Returns a :class:`Postgres`;
    call ``stop()`` (or use it as a context manager).
    """
    for tool in ("initdb", "postgres", "psql", "pg_isready"):
        if not (PG_BIN / tool).exists():
            raise HarnessError(f"{PG_BIN / tool} not found: install postgresql-15 (apt-get install -y postgresql-15)")
    as_pg = _pg_user()
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    root = Path(tempfile.mkdtemp(prefix="pdp-pg-", dir=base))
    data = root / "data"
    if as_pg:
        os.chown(root, as_pg["user"], as_pg["group"])
    os.chmod(root, 0o700)
    log_path = Path(tmp_path) / "postgres.log" if tmp_path else root / "postgres.log"
    try:
        cp = subprocess.run([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                             "-E", "UTF8", "--locale=C", "--no-sync"],
                            cwd=root, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                            **as_pg)
        if cp.returncode != 0:
            raise HarnessError(f"initdb failed: {cp.stdout}\n{cp.stderr}")
        last_error = ""
        for _ in range(5):
            port = free_port()
            log = open(log_path, "ab")
            proc = subprocess.Popen(
                [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port),
                 "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={root}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=200"],
                cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, **as_pg)
            log.close()
            pg = Postgres(port=port, dbname=dbname, root=root, proc=proc, log_path=log_path)
            _register(pg, proc.pid)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                ready = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", HOST, "-p", str(port),
                                        "-U", "postgres", "-d", "postgres"], stdin=subprocess.DEVNULL)
                if ready.returncode == 0:
                    break
                time.sleep(0.1)
            if proc.poll() is None and time.monotonic() < deadline:
                pg.create_database(dbname)
                return pg
            last_error = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            pg._stopped = True  # keep the data dir for the next attempt
            _kill_group(proc, signal.SIGKILL)
            _unregister(proc.pid)
        raise HarnessError(f"PostgreSQL did not start:\n{last_error}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def reset_database(db_url: str) -> None:
    """TRUNCATE "Post", "User" RESTART IDENTITY CASCADE on the database at ``db_url``."""
    cp = subprocess.run([str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", db_url,
                         "-c", 'TRUNCATE "Post", "User" RESTART IDENTITY CASCADE'],
                        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if cp.returncode != 0:
        raise HarnessError(f"reset failed: {cp.stderr.strip()}")


# --------------------------------------------------------------------------------------------
# servers

#: server kind -> (npm project, script, takes a database URL)
SERVER_KINDS: dict[str, tuple[str, str, bool]] = {
    "qpe": ("prisma7", "qpe-server.mjs", True),
    "engine": ("prisma6", "engine-server.mjs", True),
    "dataproxy": ("prisma6", "dataproxy-server.mjs", True),
    "demo": ("prisma7", "demo-server.mjs", False),
}


@dataclass
class Server(_Stoppable):
    """A running server process (its own process group)."""

    kind: str
    port: int
    proc: subprocess.Popen
    info: dict[str, Any]
    log_path: Path
    api_key: str = API_KEY
    owns_log_dir: bool = False
    _stdout: list[str] = field(default_factory=list, repr=False)
    _final_log: str | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def client_url(self) -> str:
        """The URL ``run_workload`` needs for this server's client kind."""
        if self.kind == "demo":
            return self.info["url"]
        return client_url(SERVER_TO_CLIENT[self.kind], self.port, api_key=self.api_key)

    @property
    def log(self) -> str:
        """Everything the server wrote to stderr so far (and stdout after the ready line)."""
        if self._final_log is not None:
            return self._final_log
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text + "".join(self._stdout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 10 s; idempotent. A temporary log directory
        (no log_dir given) is removed; ``log`` keeps its text."""
        _kill_group(self.proc)
        _unregister(self.proc.pid)
        if self.owns_log_dir and self._final_log is None:
            self._final_log = self.log
            shutil.rmtree(self.log_path.parent, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


SERVER_TO_CLIENT = {"qpe": "prisma7", "engine": "binary", "dataproxy": "dataproxy", "demo": "demo"}


def client_url(client_kind: str, port: int, *, host: str = HOST, api_key: str = API_KEY) -> str:
    """Target URL for ``run_workload(client_kind, …)`` when the server (or a proxy) is at host:port.

    prisma7 / dataproxy / demo: ``prisma+postgres://host:port/?api_key=KEY``; binary: ``http://host:port``.
    """
    if client_kind == "binary":
        return f"http://{host}:{port}"
    if client_kind in ("prisma7", "dataproxy", "demo"):
        return f"prisma+postgres://{host}:{port}/?api_key={api_key}"
    raise HarnessError(f"unknown client kind {client_kind!r}")


def start_server(kind: str, db_url: str | None = None, port: int = 0, *, pool_max: int | None = None,
                 api_key: str = API_KEY, env: dict[str, str] | None = None, log_dir: Path | str | None = None,
                 ready_timeout: float = 60) -> Server:
    """Starts server ``kind`` ("qpe", "engine", "dataproxy", "demo") and waits for its ready line.

    ``db_url`` is required except for "demo". ``port=0`` lets the OS choose. ``pool_max`` sets
    POOL_MAX for the 6.19 engine servers (node-postgres pool, default 4). The server's stderr
    goes to ``log_dir/<kind>-<pid>.log`` (a temp file when log_dir is None). Returns a
    :class:`Server` whose ``port``, ``info`` (the parsed ready line) and ``client_url`` are set.
    """
    if kind not in SERVER_KINDS:
        raise HarnessError(f"unknown server kind {kind!r}; expected one of {sorted(SERVER_KINDS)}")
    project, script, needs_db = SERVER_KINDS[kind]
    if needs_db and not db_url:
        raise HarnessError(f"server {kind!r} needs a database URL")
    node, _ = _require_node()
    pdir = ensure_installed(project)
    argv = [node, str(pdir / script), "--port", str(port)]
    if needs_db:
        argv += ["--database-url", db_url]
    if kind == "dataproxy":
        argv += ["--api-key", api_key]
    full_env = {**os.environ, **(env or {})}
    if pool_max is not None:
        full_env["POOL_MAX"] = str(pool_max)
    owns_log_dir = log_dir is None
    log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="pdp-srv-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{kind}-{time.time_ns()}.log"
    with open(log_path, "wb") as errf:
        proc = subprocess.Popen(argv, cwd=pdir, env=full_env, stdout=subprocess.PIPE, stderr=errf,
                                stdin=subprocess.DEVNULL, start_new_session=True, text=True, bufsize=1)
    server = Server(kind=kind, port=0, proc=proc, info={}, log_path=log_path, api_key=api_key,
                    owns_log_dir=owns_log_dir)
    _register(server, proc.pid)
    ready: dict[str, Any] = {}
    got = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not got.is_set():
                with contextlib.suppress(ValueError):
                    obj = json.loads(line)
                    if isinstance(obj, dict) and obj.get("ready") is True:
                        ready.update(obj)
                        got.set()
                        continue
            server._stdout.append(line)
        got.set()

    threading.Thread(target=pump, name=f"pdp-{kind}-stdout", daemon=True).start()
    if not got.wait(ready_timeout) or not ready:
        server.stop()
        raise HarnessError(f"{kind} server did not become ready within {ready_timeout}s "
                           f"(exit code {proc.poll()}):\n{server.log[-4000:]}")
    server.port = int(ready["port"])
    server.info = ready
    return server


# --------------------------------------------------------------------------------------------
# workloads

#: client kind -> npm project
CLIENT_PROJECT = {"prisma7": "prisma7", "demo": "prisma7", "binary": "prisma6", "dataproxy": "prisma6"}


@dataclass
class _ProcHandle(_Stoppable):
    proc: subprocess.Popen

    def stop(self) -> None:
        _kill_group(self.proc, signal.SIGKILL)


def _workload_argv(kind: str, target_url: str, node: str, pdir: Path) -> list[str]:
    tsx = [node, str(pdir / "node_modules" / "tsx" / "dist" / "cli.mjs")]
    if kind == "prisma7":
        return [*tsx, str(pdir / "workload.mts"), target_url]
    if kind == "demo":
        return [*tsx, str(pdir / "workload.mts"), target_url, "--demo"]
    if kind in ("binary", "dataproxy"):
        return [node, str(pdir / "workload.mjs"), kind, target_url]
    raise HarnessError(f"unknown client kind {kind!r}; expected prisma7, binary, dataproxy or demo")


def run_workload(kind: str, target_url: str, *, timeout: float = 120, env: dict[str, str] | None = None,
                 check_done: bool = True) -> list[dict[str, Any]]:
    """Runs the workload with client ``kind`` ("prisma7", "binary", "dataproxy", "demo") against
    ``target_url`` (see :func:`client_url`) and returns one dict per step::

        {"n", "step", "outcome": "ok"|"error", "code", "result", "summary", ["message"], ["outcomes"]}

    Raises HarnessError when the script exits non-zero or does not finish all steps.
    """
    if kind not in CLIENT_PROJECT:
        raise HarnessError(f"unknown client kind {kind!r}")
    node, _ = _require_node()
    pdir = ensure_installed(CLIENT_PROJECT[kind])
    argv = _workload_argv(kind, target_url, node, pdir)
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    # The 6.19 binary-engine client writes its schema to $TMPDIR/<random>.prisma and never
    # removes it: give it a private TMPDIR that is deleted afterwards.
    private_tmp = tempfile.mkdtemp(prefix="pdp-wl-") if kind == "binary" else None
    if private_tmp:
        full_env["TMPDIR"] = private_tmp
    proc = subprocess.Popen(argv, cwd=pdir, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    _register(_ProcHandle(proc), proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        _kill_group(proc, signal.SIGKILL)
        raise HarnessError(f"workload {kind} timed out after {timeout}s") from e
    finally:
        _kill_group(proc)
        _unregister(proc.pid)
        if private_tmp:
            shutil.rmtree(private_tmp, ignore_errors=True)
    steps: list[dict[str, Any]] = []
    done = False
    for line in out.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "step" in obj and "n" in obj:
            steps.append(obj)
        elif isinstance(obj, dict) and obj.get("done") is True:
            done = True
    if proc.returncode != 0 or (check_done and not done):
        raise HarnessError(f"workload {kind} against {target_url} failed (exit {proc.returncode}, "
                           f"{len(steps)} steps, done={done}):\n{err[-4000:]}")
    return steps


def comparable(steps: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(n, step, outcome, code, result, outcomes) per step: equal for a direct and a proxied run."""
    return [(s["n"], s["step"], s["outcome"], s.get("code"), s.get("result"), s.get("outcomes")) for s in steps]


