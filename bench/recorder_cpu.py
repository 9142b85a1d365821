#!/usr/bin/env python3
"""Recorder CPU per exchange, by protocol and correlation setting (no network, one process).

    .venv/bin/python bench/recorder_cpu.py [--n 4000] [--rounds 3] [--profile OUT.txt]

Why: on a 2-core box the recorder shares a core with the client or the proxy, so every µs it
spends per exchange is throughput lost somewhere, and past its rate captures are dropped
(counted). This drives the *real* recording side (``build_recording``: build, redaction,
decoding, correlation, metrics, spans, SQLite store) with captures shaped like the ones the
overhead benchmark produces, in the same batches the worker takes, and prints µs/exchange:

  engine      Prisma 6 engine ``POST /`` findMany (bench/prisma_findmany_request.json), no telemetry
  qpe         Prisma 7 ``POST /query`` plan, answer without telemetry (recording only, like Br)
  qpe+tel     the executor's spans + query logs in the answer and a traceparent, no span export
  qpe+corr    the same with spans built and OTLP-encoded (like Bt; encoded then discarded)

The baseline printed beside each is ``engine`` in the same run (ratios), so machine speed
cancels out.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402

from pdp_observe.capture import RawCapture  # noqa: E402
from pdp_observe.config import Settings  # noqa: E402
from pdp_observe.engine.telemetry import GEN_QPE  # noqa: E402
from pdp_observe.recording import build_recording  # noqa: E402
from pdp_observe.tracecontext import start_span  # noqa: E402

ENGINE_RESPONSE = (b'{"data":{"findManyUser":[{"id":1,"email":"alice@example.test","name":"Alice"},'
                   b'{"id":2,"email":"bob@example.test","name":"Bob"}]}}')


class EncodingExporter(SpanExporter):
    """Encodes every batch to OTLP protobuf (the exporter's real CPU) and discards it."""

    def __init__(self) -> None:
        self.bytes = 0

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.bytes += len(encode_spans(spans).SerializeToString())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class BatchOnEnd(SimpleSpanProcessor):
    """Collects spans and exports them in batches of 512 on this thread (CPU counted here,
    which the SDK's BatchSpanProcessor would spend on its own thread)."""

    def __init__(self, exporter: SpanExporter) -> None:
        super().__init__(exporter)
        self._buf: list = []

    def on_end(self, span) -> None:  # type: ignore[no-untyped-def]
        self._buf.append(span)
        if len(self._buf) >= 512:
            self.force_flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        buf, self._buf = self._buf, []
        if buf:
            self.span_exporter.export(buf)
        return True


def make_capture(kind: str, i: int) -> RawCapture:
    now = time.time()
    t0 = time.perf_counter()
    if kind == "engine":
        path, req, resp = "/", (HERE / "prisma_findmany_request.json").read_bytes(), ENGINE_RESPONSE
    else:
        path, req = "/query", (HERE / "qpe_findmany_request.json").read_bytes()
        resp = (HERE / ("qpe_findmany_response_telemetry.json" if kind != "qpe"
                        else "qpe_findmany_response.json")).read_bytes()
    headers = [(b"Host", b"127.0.0.1:4466"), (b"Content-Type", b"application/json"),
               (b"Authorization", b"Bearer secret-token"), (b"Content-Length", str(len(req)).encode())]
    raw = RawCapture(now, t0, "POST", path, "1.1", "127.0.0.1", "http://127.0.0.1:4467", headers)
    raw.t_connected, raw.t_first_byte, raw.t_done = t0 + 0.0001, t0 + 0.0008, t0 + 0.0009
    raw.req_body, raw.req_size = req, len(req)
    raw.status, raw.reason = 200, "OK"
    raw.resp_headers = [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(resp)).encode())]
    raw.resp_body, raw.resp_size = resp, len(resp)
    raw.inflight = 1
    if kind in ("qpe+tel", "qpe+corr"):
        raw.trace = start_span(None)
        raw.tel = (GEN_QPE, None, "tracing, query", len(resp) - 376)
    return raw


def run_kind(kind: str, n: int, batch: int, tmp: Path) -> float:
    """µs of this thread's CPU per exchange through the whole recording side."""
    settings = Settings(db=str(tmp / f"{kind.replace('+', '_')}-{time.monotonic_ns()}.db"))
    exporter = EncodingExporter()
    side = build_recording(settings, span_processor=BatchOnEnd(exporter) if kind == "qpe+corr" else None)
    rec = side.recorder
    caps = [make_capture(kind, i) for i in range(n)]
    rec.process(caps[:batch])  # warm: schema, caches
    t = time.thread_time()
    for i in range(batch, n, batch):
        rec.process(caps[i:i + batch])
    if side.spans is not None:
        side.spans.processor.force_flush()
    used = time.thread_time() - t
    rec.writer.close()
    return used / (n - batch) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000, help="exchanges per kind and round")
    ap.add_argument("--batch", type=int, default=200, help="exchanges per worker batch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kinds", default="engine,qpe,qpe+tel,qpe+corr")
    ap.add_argument("--profile", metavar="OUT.txt", help="cProfile the last kind; top 40 by cumulative time")
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    with tempfile.TemporaryDirectory(prefix="pdp-reccpu-") as d:
        tmp = Path(d)
        res: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            for k in kinds:
                res[k].append(run_kind(k, args.n, args.batch, tmp))
                print(f"round {r + 1} {k:9} {res[k][-1]:7.1f} µs/exchange", flush=True)
        base = statistics.median(res[kinds[0]])
        print(f"\n| kind | µs/exchange (median of {args.rounds}) | × {kinds[0]} | max exchanges/s on one core |")
        print("|---|---|---|---|")
        for k in kinds:
            m = statistics.median(res[k])
            print(f"| {k} | {m:.1f} | {m / base:.2f} | {1e6 / m:,.0f} |")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            run_kind(kinds[-1], args.n, args.batch, tmp)
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(45)
            Path(args.profile).write_text(s.getvalue())
            print(f"profile of {kinds[-1]} written to {args.profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
