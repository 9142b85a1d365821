"""``pdp-observe demo``: a real Prisma stack with the sidecar in between, captures shown.

Prisma Client 7.2 → pdp_observe → ``prisma dev`` (the Prisma 7 query-plan executor over an
embedded PGlite database, so no PostgreSQL is needed). The pinned npm packages are installed
on first run; every process started is stopped on exit and on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TextIO

from .config import Settings
from .exchange import short_id
from .sidecar import Sidecar, start_sidecar
from .store import StoreReader
from .views import drop_summary, show, table


def _port_or_any(port: int) -> int:
    """The preferred port if it is free on loopback, else 0 (any)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


class Demo:
    def __init__(self, db: Path, keep_running: bool, out: TextIO = sys.stdout) -> None:
        self.db = db
        self.keep_running = keep_running
        self.out = out
        self.t0 = time.monotonic()

    def say(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:5.1f}s] {msg}", file=self.out, flush=True)

    async def run(self) -> int:
        from .stacks import harness  # noqa: PLC0415 - only the demo needs node

        self.say("installing the pinned Prisma 7.2 npm packages (first run only, ~20 s)…")
        try:
            pdir = await asyncio.to_thread(harness.ensure_installed, "prisma7")
        except harness.HarnessError as exc:
            print(f"pdp-observe demo: {exc}", file=sys.stderr)
            return 2
        self.say(f"npm project ready in {pdir}")
        self.say("starting `prisma dev` (Prisma 7 query-plan executor over embedded PGlite)…")
        server = await asyncio.to_thread(harness.start_server, "demo")
        sc: Sidecar | None = None
        try:
            upstream = f"http://127.0.0.1:{server.port}"
            _remove_db(self.db)
            settings = Settings(upstream=upstream, db=str(self.db),
                                listen=f"127.0.0.1:{_port_or_any(4466)}",
                                admin_listen=f"127.0.0.1:{_port_or_any(9466)}")
            sc = await start_sidecar(settings)
            self.say(f"prisma dev on :{server.port}; pdp_observe on :{sc.port} in front of it "
                     f"(admin :{sc.admin_port}), recording to {self.db}")
            client_url = _via_sidecar(server.client_url, sc.port)
            self.say("running a Prisma Client 7.2 workload through the sidecar…")
            steps = await asyncio.to_thread(harness.run_workload, "demo", client_url)
            for st in steps:
                mark = "ok " if st["outcome"] == "ok" else f"{st.get('code')}"
                print(f"         {mark:<8} {st['step']}", file=self.out)
            stored = await _drain(sc)
            self.say(f"{stored} exchanges recorded; what crossed the hop:\n")
            self.report()
            if self.keep_running:
                await self.wait_for_ctrl_c(sc, client_url)
            return 0
        finally:
            if sc is not None:
                await sc.stop()
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(harness.stop_all)

    def report(self) -> None:
        reader = StoreReader(str(self.db))
        try:
            rows = reader.last(0)
            print(table(rows), file=self.out)
            txs = reader.transactions()
            if txs:
                print("\ninteractive transactions:", file=self.out)
                for t in txs:
                    print(f"  {t['txn'][:8]}  {t['outcome']:<12} {t['query_count']} queries  "
                          f"{(t['duration_ms'] or 0):.1f} ms", file=self.out)
            failed = next((r for r in rows if r.error_code), None)
            if failed is not None:
                print(f"\n$ pdp-observe show --db {self.db} {short_id(failed.id)}   # the failing request, decoded",
                      file=self.out)
                shown = show(reader.get(failed.id)).splitlines()
                end = next((i for i, line in enumerate(shown) if line.startswith("> ")), len(shown))
                print("\n".join(shown[:end]).rstrip(), file=self.out)
            if summary := drop_summary(reader.counters()):
                print(f"\nnote: {summary}", file=self.out)
        finally:
            reader.close()
        print(f"\nExplore: pdp-observe ls --db {self.db} [--model User --action createOne --code P2002 --json]",
              file=self.out)

    async def wait_for_ctrl_c(self, sc: Sidecar, client_url: str) -> None:
        url_file = self.db.with_suffix(".url")
        url_file.write_text(client_url + "\n")
        url_file.chmod(0o600)
        self.say(f"still running: point a Prisma 7.2 client at the URL in {url_file} "
                 "(it holds the local api key); Ctrl-C stops everything")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def _via_sidecar(server_url: str, port: int) -> str:
    """The server's prisma+postgres URL with host:port swapped for the sidecar's (key kept)."""
    from yarl import URL  # noqa: PLC0415

    u = URL(server_url)
    return str(u.with_host("127.0.0.1").with_port(port))


async def _drain(sc: Sidecar, timeout: float = 10.0) -> int:
    """Wait until the recorder process has stored what the proxy sent; returns the count."""
    import aiohttp  # noqa: PLC0415

    assert sc.child is not None
    sc.child.link.flush()
    deadline = time.monotonic() + timeout
    health: dict[str, object] = {"stored": 0}
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(f"http://127.0.0.1:{sc.admin_port}/healthz") as r:
                health = await r.json()
            done = int(health["stored"]) + sum(dict(health["dropped"]).values())  # type: ignore[call-overload]
            if done >= sc.child.link.sent and not health["queue_depth"]:
                break
            await asyncio.sleep(0.05)
    return int(health["stored"])  # type: ignore[call-overload]


def run_demo(db: str, keep_running: bool) -> int:
    demo = Demo(Path(db).resolve(), keep_running)
    try:
        return asyncio.run(demo.run())
    except KeyboardInterrupt:
        print("\ninterrupted; everything the demo started has been stopped", file=sys.stderr)
        return 130
