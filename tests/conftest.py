"""Shared fixtures: a real upstream and a real sidecar, both on loopback ephemeral ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from pdp_observe.config import Settings
from pdp_observe.sidecar import Sidecar, start_sidecar
from tests.support.upstream import UpstreamState, start_upstream

ROOT = Path(__file__).resolve().parent.parent
PDP = [sys.executable, "-m", "pdp_observe.cli"]


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, UpstreamState]]:
    runner, port, state = await start_upstream()
    yield f"http://127.0.0.1:{port}", state
    await runner.cleanup()


def make_settings(upstream_url: str, db: Path, **overrides: object) -> Settings:
    s = Settings(upstream=upstream_url, listen="127.0.0.1:0", db=str(db), admin_listen="127.0.0.1:0",
                 recorder="inline")
    for k, v in overrides.items():
        setattr(s, k, v)
    return s


@pytest.fixture
async def sidecar(upstream: tuple[str, UpstreamState], tmp_path: Path) -> AsyncIterator[Sidecar]:
    sc = await start_sidecar(make_settings(upstream[0], tmp_path / "captures.db"))
    yield sc
    await sc.stop()


def wait_stored(sc: Sidecar, n: int, timeout: float = 10.0) -> None:
    """Block until the worker has stored (or dropped) ``n`` captures."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sc.recorder.stored + sum(sc.recorder.dropped().values()) >= n and sc.recorder.queue_depth == 0:
            return
        time.sleep(0.01)
    raise AssertionError(f"only {sc.recorder.stored} of {n} captures stored after {timeout}s")


async def await_stored(sc: Sidecar, n: int, timeout: float = 10.0) -> dict:
    """Wait until ``n`` captures are stored or dropped; returns the recorder's health figures.

    Works for both recorder modes: inline reads the Recorder, process mode asks /healthz.
    """
    import asyncio

    import aiohttp

    deadline = time.monotonic() + timeout
    health: dict = {}
    while time.monotonic() < deadline:
        if sc.recorder is not None:
            health = {"stored": sc.recorder.stored, "dropped": sc.recorder.dropped(),
                      "queue_depth": sc.recorder.queue_depth}
        else:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{sc.admin_port}/healthz") as r:
                    health = await r.json()
        if health["stored"] + sum(health["dropped"].values()) >= n and health["queue_depth"] == 0:
            return health
        await asyncio.sleep(0.02)
    raise AssertionError(f"only {health.get('stored')} of {n} captures stored after {timeout}s: {health}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProxyProcess:
    """A real ``pdp-observe proxy`` in its own process (for kill -9, RSS and CLI tests)."""

    def __init__(self, upstream: str, db: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.db = db
        self.log = db.with_suffix(".log")
        cmd = [*PDP, "proxy", "--listen", f"127.0.0.1:{self.port}", "--upstream", upstream,
               "--db", str(db), "--admin-listen", f"127.0.0.1:{self.admin_port}", *extra]
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited early:\n{self.log.read_text()}")
            try:  # the recorder process binds the admin port before the proxy binds its own
                for port in (self.admin_port, self.port):
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"proxy not ready:\n{self.log.read_text()}")

    def rss_peak_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return -1

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._logf.close()
        return self.log.read_text()


@pytest.fixture
def proxy_process() -> Iterator[type[ProxyProcess]]:
    started: list[ProxyProcess] = []

    class Tracked(ProxyProcess):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, **kw)  # type: ignore[arg-type]
            started.append(self)

    yield Tracked
    for p in started:
        p.stop()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PDP, *args], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, **(env or {})})
