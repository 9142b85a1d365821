"""The recorder process: everything after forwarding, away from the proxy's event loop.

Started by the proxy (``pdp-observe proxy``, default ``--recorder process``) as
``python -m pdp_observe.recorder_process`` with its settings in ``PDP_RECORDER_CONFIG``. It reads
capture batches from stdin (see :mod:`pdp_observe.link`), runs the same :class:`Recorder` the
inline mode runs (decode, redact, store, metrics) and serves the admin listener, so /metrics
and /healthz describe what was recorded. stdin closing (the proxy stopping, or dying) makes it
drain what it holds and exit: it never outlives the proxy.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import sys

from .config import Settings, parse_cpus, store_process_wanted
from .link import FRAME_CAPTURES, FRAME_STATS, FrameReader, decode_captures, split_captures
from .recording import build_recording

log = logging.getLogger("pdp_observe.recorder")


async def serve(settings: Settings) -> int:
    writer = None
    if store_process_wanted(settings.store_process, len(os.sched_getaffinity(0))):
        from .store_process import StoreClient  # noqa: PLC0415

        writer = await asyncio.to_thread(StoreClient, settings.db)
    rec = build_recording(settings, writer=writer, in_flight=lambda: recorder.remote_in_flight,
                          in_flight_list=lambda: recorder.remote_active,
                          high_water=lambda: recorder.remote_high_water)
    recorder = rec.recorder
    tune_gc()
    recorder.start()
    await rec.start_services()

    def health() -> dict[str, object]:
        return {"status": "ok", "upstream": settings.upstream, "listen": settings.listen, "db": settings.db,
                "stored": recorder.stored, "queue_depth": recorder.queue_depth,
                "in_flight": recorder.remote_in_flight, "dropped": recorder.dropped(),
                "recorder_pid": os.getpid(), "store_pid": store_pid()}

    def store_pid() -> int | None:
        proc = getattr(recorder.writer, "proc", None)
        return proc.pid if proc is not None and proc.poll() is None else None

    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, done.set)

    def on_frame(kind: bytes, payload: bytes) -> None:
        try:
            if kind == FRAME_CAPTURES:
                count, body_bytes, packed = split_captures(payload)
                recorder.submit_packed(packed, count, body_bytes, decode_captures)
            elif kind == FRAME_STATS:
                recorder.add_remote(json.loads(payload))
        except Exception as exc:  # noqa: BLE001 - a bad frame costs that frame only
            log.warning("bad frame from the proxy process: %r", exc)

    try:
        admin_port = None
        if settings.admin_addr is not None:
            admin_port = await rec.start_admin(settings.admin_addr, health)
        await loop.connect_read_pipe(lambda: FrameReader(on_frame, done.set), sys.stdin.buffer)
        print(json.dumps({"ready": True, "admin_port": admin_port, "pid": os.getpid()}), flush=True)
        os.dup2(2, 1)  # nobody reads our stdout after the ready line: never let it fill and block us
        await done.wait()
    finally:
        await rec.stop_services()
        await asyncio.to_thread(rec.stop_recorder)
        dropped = recorder.dropped()
        if dropped:
            log.warning("captures dropped this run: %s", ", ".join(f"{k}={v}" for k, v in sorted(dropped.items())))
    return 0


GC_THRESHOLD = (50_000, 20, 100)
"""Young-generation collections every 50,000 allocations instead of 700.

The worker allocates ~30 objects per exchange (the exchange, its bodies, header lists, the
stored row) and almost none of them form cycles, yet at the default threshold the collector
ran every ~25 exchanges and promoted batches into the older generations, whose collections
walk every live object: ~10 µs of the ~85 µs per exchange at 200k stored rows. Cycles are
still collected, just in fewer, larger passes."""


def tune_gc() -> None:
    """Raise the collection thresholds and move what startup built out of the collector's
    sight (``gc.freeze``): settings, modules and caches live as long as the process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def main() -> int:
    settings = Settings(**json.loads(os.environ["PDP_RECORDER_CONFIG"]))
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the proxy decides
    if settings.recorder_cpus:
        os.sched_setaffinity(0, parse_cpus(settings.recorder_cpus))
    if settings.recorder_idle:
        # before any thread exists: threads inherit the policy. A waking proxy preempts us at once.
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif settings.recorder_nice:
        os.nice(settings.recorder_nice)  # recording yields to forwarding when CPU is short
    try:
        import uvloop  # noqa: PLC0415

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
