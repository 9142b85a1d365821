"""The pipe between the proxy process and the recorder process.

Why a second process: everything done per exchange after forwarding (decoding, redaction,
fingerprints, compression, SQLite) costs more CPU than forwarding itself, and in one process
it also competes with the event loop for the GIL, stretching p99 latency to the 5 ms switch
interval. The proxy process therefore only batches its raw captures (every few ms), pickles
the batch once and writes it to the recorder's stdin through a non-blocking pipe transport.

Frames: one type byte, a 4-byte big-endian length, the payload.
``C`` = capture count (4 bytes) and body bytes (8 bytes), big-endian, then the pickled list of
:meth:`RawCapture.to_tuple` (proxy → recorder). The counts let the recorder admit or drop a
frame against its queue bounds without unpickling it: unpickling happens in its worker,
right before the captures are used (while they are still in the CPU's cache);
``S`` = JSON stats of the proxy process (in-flight requests, its own drop counts).
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import struct
from typing import Any, Callable

from .capture import RawCapture

log = logging.getLogger("pdp_observe.link")

FRAME_CAPTURES = b"C"
FRAME_STATS = b"S"
_HEADER = 5
_COUNTS = struct.Struct(">IQ")


def frame(kind: bytes, payload: bytes) -> bytes:
    return kind + len(payload).to_bytes(4, "big") + payload


class FrameReader(asyncio.Protocol):
    """Recorder side: splits the byte stream into frames and hands them on."""

    def __init__(self, on_frame: Callable[[bytes, bytes], None], on_eof: Callable[[], None]) -> None:
        self._buf = bytearray()
        self._on_frame = on_frame
        self._on_eof = on_eof

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= _HEADER:
            size = int.from_bytes(buf[1:_HEADER], "big")
            if len(buf) < _HEADER + size:
                return
            kind, payload = bytes(buf[:1]), bytes(buf[_HEADER:_HEADER + size])
            del buf[:_HEADER + size]
            self._on_frame(kind, payload)

    def eof_received(self) -> bool:
        self._on_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_eof()


def capture_frame(batch: list[RawCapture]) -> bytes:
    """A ``C`` frame: counts, then the pickled captures."""
    body_bytes = sum(len(r.req_body) + len(r.resp_body) for r in batch)
    payload = _COUNTS.pack(len(batch), body_bytes) + pickle.dumps([r.to_tuple() for r in batch], protocol=5)
    return frame(FRAME_CAPTURES, payload)


def split_captures(payload: bytes) -> tuple[int, int, bytes]:
    """A ``C`` frame's payload → (capture count, body bytes, packed captures)."""
    count, body_bytes = _COUNTS.unpack_from(payload)
    return count, body_bytes, payload[_COUNTS.size:]


def decode_captures(packed: bytes) -> list[RawCapture]:
    """Packed captures (the part of a ``C`` payload after the counts) → captures."""
    return [RawCapture.from_tuple(t) for t in pickle.loads(packed)]  # noqa: S301 - our own parent


class RecorderLink:
    """Proxy side: the hot path's ``submit`` target when recording runs in its own process.

    Bounded like the in-process queue: past ``queue_max`` pending captures, or past
    ``queue_max_bytes`` of pending plus not-yet-written pipe bytes, a capture is dropped and
    counted (``queue_full``); while the recorder process is down, ``recorder_down``.
    """

    def __init__(self, queue_max: int, queue_max_bytes: int, flush_interval: float = 0.005) -> None:
        self.queue_max = queue_max
        self.queue_max_bytes = queue_max_bytes
        self.flush_interval = flush_interval
        self.transport: asyncio.WriteTransport | None = None
        self.dropped: dict[str, int] = {}
        self.sent = 0
        self._pending: list[RawCapture] = []
        self._pending_bytes = 0
        self._flush_handle: asyncio.TimerHandle | None = None

    def submit(self, raw: RawCapture) -> None:
        """Hot path: O(1), never blocks, never raises."""
        t = self.transport
        if t is None or t.is_closing():
            self.dropped["recorder_down"] = self.dropped.get("recorder_down", 0) + 1
            return
        size = len(raw.req_body) + len(raw.resp_body)
        if (len(self._pending) >= self.queue_max
                or t.get_write_buffer_size() + self._pending_bytes + size > self.queue_max_bytes):
            self.dropped["queue_full"] = self.dropped.get("queue_full", 0) + 1
            return
        self._pending.append(raw)
        self._pending_bytes += size
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        self._flush_handle = None
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        if not batch:
            return
        t = self.transport
        if t is None or t.is_closing():
            self.dropped["recorder_down"] = self.dropped.get("recorder_down", 0) + len(batch)
            return
        try:
            t.write(capture_frame(batch))
            self.sent += len(batch)
        except Exception as exc:  # noqa: BLE001 - a broken pipe costs captures, not traffic
            self.dropped["recorder_down"] = self.dropped.get("recorder_down", 0) + len(batch)
            log.debug("capture pipe write failed: %r", exc)

    def send_stats(self, stats: dict[str, Any]) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            try:
                t.write(frame(FRAME_STATS, json.dumps(stats).encode()))
            except Exception:  # noqa: BLE001
                pass
