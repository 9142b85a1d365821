"""The default recorder runs in its own process: its trouble never reaches the traffic."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp

from pdp_observe.store import StoreReader
from tests.conftest import run_cli


async def health(port: int) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
            return await r.json()


async def wait_health(port: int, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await health(port)
        except aiohttp.ClientError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_recorder_crash_costs_captures_not_traffic_and_it_comes_back(upstream, proxy_process, tmp_path):
    db = tmp_path / "c.db"
    proxy = proxy_process(upstream[0], db, "--store-process")
    h = await wait_health(proxy.admin_port)
    first, first_store = h["recorder_pid"], h["store_pid"]
    async with aiohttp.ClientSession() as s:
        async def one(i: int) -> int:
            async with s.get(f"{proxy.url}/echo?i={i}") as r:
                await r.read()
                return r.status

        assert await asyncio.gather(*(one(i) for i in range(20))) == [200] * 20
        os.kill(first, signal.SIGKILL)
        statuses = []
        for i in range(20, 120):  # traffic while the recorder is down and restarting
            statuses.append(await one(i))
            await asyncio.sleep(0.01)
        assert statuses == [200] * 100
        deadline = time.monotonic() + 20
        while True:
            try:
                h = await health(proxy.admin_port)
                if h["recorder_pid"] != first:
                    break
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "recorder not restarted"
            await asyncio.sleep(0.1)
        assert await asyncio.gather(*(one(i) for i in range(1000, 1010))) == [200] * 10
        assert not alive(first_store), "the killed recorder's store process lives on"
    log = proxy.stop()
    assert "the recorder process exited" in log
    rows = {r.path for r in StoreReader(str(db)).iter_all()}
    assert {f"/echo?i={i}" for i in range(1000, 1010)} <= rows  # recording resumed
    assert "recorder_down" in run_cli("ls", "--db", str(db)).stderr


async def test_recorder_never_outlives_a_killed_proxy(upstream, proxy_process, tmp_path):
    proxy = proxy_process(upstream[0], tmp_path / "c.db", "--store-process")
    h = await wait_health(proxy.admin_port)
    child, store = h["recorder_pid"], h["store_pid"]
    assert store is not None and alive(store)
    async with aiohttp.ClientSession() as s:
        for i in range(10):
            async with s.get(f"{proxy.url}/echo?i={i}") as r:
                await r.read()
    await asyncio.sleep(0.1)  # let the batch reach the recorder
    os.kill(proxy.proc.pid, signal.SIGKILL)  # the proxy only, not its group
    deadline = time.monotonic() + 15
    while alive(child):
        assert time.monotonic() < deadline, "recorder process outlived the proxy"
        await asyncio.sleep(0.05)
    while alive(store):
        assert time.monotonic() < deadline, "store process outlived the recorder"
        await asyncio.sleep(0.05)
    assert len(list(StoreReader(str(tmp_path / "c.db")).iter_all())) == 10  # it drained first


async def test_ctrl_c_to_the_group_drains_every_capture(upstream, proxy_process, tmp_path):
    db = tmp_path / "c.db"
    proxy = proxy_process(upstream[0], db)
    await wait_health(proxy.admin_port)
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(s.get(f"{proxy.url}/echo?i={i}") for i in range(200)))
    os.killpg(proxy.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    proxy.proc.wait(30)
    assert proxy.proc.returncode == 0
    assert len(list(StoreReader(str(db)).iter_all())) == 200


async def test_recorder_yields_cpu_to_forwarding(upstream, proxy_process, tmp_path):
    """By default the recorder is niced +10; with --recorder-idle every thread of it runs
    SCHED_IDLE while the forwarding process stays a normal one."""
    proxy = proxy_process(upstream[0], tmp_path / "c.db", "--store-process")
    child = (await wait_health(proxy.admin_port))["recorder_pid"]
    nice = lambda pid: int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[16])  # noqa: E731
    assert os.sched_getscheduler(child) == os.SCHED_OTHER
    assert nice(child) == nice(proxy.proc.pid) + 10
    store = (await health(proxy.admin_port))["store_pid"]
    assert nice(store) == nice(child)  # SQLite commits yield to forwarding too

    idle = proxy_process(upstream[0], tmp_path / "d.db", "--recorder-idle", "--no-store-process")
    h = await wait_health(idle.admin_port)
    child = h["recorder_pid"]
    assert h["store_pid"] is None  # the recorder commits itself
    threads = os.listdir(f"/proc/{child}/task")
    assert len(threads) >= 2  # the event loop and the capture worker at least
    assert {os.sched_getscheduler(int(t)) for t in threads} == {os.SCHED_IDLE}
    assert os.sched_getscheduler(idle.proc.pid) == os.SCHED_OTHER


async def test_store_process_auto_follows_the_recorders_cpus(upstream, proxy_process, tmp_path):
    """By default the store process runs only when the recorder may use 3+ CPUs: on fewer it
    costs more CPU than it frees. One CPU for the recorder: it commits itself, and stores."""
    proxy = proxy_process(upstream[0], tmp_path / "c.db", "--recorder-cpus", "0")
    h = await wait_health(proxy.admin_port)
    assert h["store_pid"] is None
    async with aiohttp.ClientSession() as s:
        for i in range(5):
            async with s.get(f"{proxy.url}/echo?i={i}") as r:
                assert r.status == 200
    proxy.stop()
    assert len(list(StoreReader(str(tmp_path / "c.db")).iter_all())) == 5
    forced = proxy_process(upstream[0], tmp_path / "d.db", "--recorder-cpus", "0", "--store-process")
    assert (await wait_health(forced.admin_port))["store_pid"] is not None
