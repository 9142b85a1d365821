"""The recording side, built the same way in both recorder modes (thread or process).

Everything after forwarding lives here: the :class:`Recorder` (queue, worker, store), its
processors (decoding, correlation), its sinks (metrics, traces, the API's live feed), and the
services that run on the admin listener's event loop (engine /metrics scraper, OTLP receiver
and forwarder, the management API).
The proxy process builds it inline; the recorder process builds it from the same settings.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from .admin import build_admin_app
from .api import Api, LiveFeed, build_api
from .config import Settings
from .correlate import Correlate
from .engine.otlp import OtlpForwarder, OtlpReceiver
from .hub import Recorder
from .metrics import CorrelationCollector, ExchangeMetrics, RecorderCollector
from .pipeline import DecodeOperations
from .redact import Redactor
from .store import StoreWriter
from .tracing import SpanEmitter, otlp_processor_from_env

log = logging.getLogger("pdp_observe")


@dataclass
class RecordingSide:
    recorder: Recorder
    registry: CollectorRegistry
    correlate: Correlate
    scraper: Any = None  # engine.scraper.EngineScraper when --engine-metrics-url is set
    receiver: OtlpReceiver | None = None
    forwarder: OtlpForwarder | None = None
    spans: SpanEmitter | None = None
    live: LiveFeed | None = None
    settings: Settings | None = field(default=None, repr=False)
    in_flight: Callable[[], int] | None = None
    high_water: Callable[[], int] | None = None
    _runner: web.AppRunner | None = field(default=None, repr=False)

    async def start_services(self) -> None:
        """Start what needs the event loop (after the recorder thread is running)."""
        if self.forwarder is not None:
            await self.forwarder.start()
        if self.scraper is not None:
            await self.scraper.start()

    def api(self) -> Api | None:
        """The management API's context (None without settings, e.g. a bare test recorder)."""
        s = self.settings
        if s is None or self.live is None:
            return None
        writer = self.recorder.writer
        scraper = self.scraper
        return Api(db=writer.path if writer is not None else s.db, upstream=s.upstream, feed=self.live,
                   token=s.admin_token, in_flight=self.in_flight, high_water=self.high_water,
                   dropped=self.recorder.dropped, pool_latest=scraper.latest if scraper is not None else None,
                   connect_timeout=s.connect_timeout, read_timeout=s.read_timeout)

    async def start_admin(self, addr: tuple[str, int], health: Callable[[], dict[str, Any]]) -> int:
        extra = self.receiver.routes() if self.receiver is not None else []
        subapps = []
        if (api := self.api()) is not None:
            assert self.live is not None
            self.live.attach(asyncio.get_running_loop())
            subapps.append(("/api/v1", build_api(api)))
        # stream clients are told to go at shutdown; anything else gets 5 s to finish
        runner = web.AppRunner(build_admin_app(self.registry, health, extra, subapps), access_log=None,
                               shutdown_timeout=5.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, addr[0], addr[1]).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        return runner.addresses[0][1]

    async def stop_services(self) -> None:
        """Stop scraping and forwarding; the recorder itself is stopped by its owner."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.scraper is not None:
            await self.scraper.stop()
        if self.forwarder is not None:
            await self.forwarder.stop()

    def stop_recorder(self) -> None:
        """Blocking: drain the worker (so the last spans are handed over), then flush spans."""
        self.recorder.stop()
        if self.spans is not None:
            self.spans.shutdown()


def build_recording(settings: Settings, *, writer: StoreWriter | None = None,
                    registry: CollectorRegistry | None = None,
                    in_flight: Callable[[], int] | None = None,
                    in_flight_list: Callable[[], list[dict[str, Any]]] | None = None,
                    high_water: Callable[[], int] | None = None,
                    span_processor: Any = None) -> RecordingSide:
    """Store, decoding, correlation, metrics and traces — identical in both recorder modes.

    ``span_processor`` replaces the OTLP export chosen from the OTel environment (tests pass
    an in-memory one).
    """
    redactor = Redactor.with_extra(settings.redact_header, settings.redact_param)
    recorder = Recorder(
        writer if writer is not None else StoreWriter(settings.db),
        redactor=redactor, body_limit=settings.capture_body_limit, queue_max=settings.queue_max,
        queue_max_bytes=settings.queue_max_bytes, max_age=settings.max_age,
        max_db_size=settings.max_db_size,
    )
    decode = DecodeOperations()
    recorder.processors.append(decode)
    recorder.late_decode = decode.late

    scraper = None
    if settings.engine_metrics_url:
        from .engine.scraper import EngineScraper  # noqa: PLC0415 - only when scraping

        scraper = EngineScraper(settings.engine_metrics_url, interval=settings.engine_metrics_interval,
                                on_sample=lambda s: recorder.add_record("pool_sample", s))

    def active() -> list[dict[str, Any]]:
        items = in_flight_list() if in_flight_list is not None else []
        return [{**a, "path": redactor.text(a["path"])} for a in items]

    correlate = Correlate(decode.tracker, pool_at=scraper.at if scraper is not None else None,
                          in_flight=active, high_water=high_water, settle=1.5)
    recorder.processors.append(correlate)

    registry = registry or CollectorRegistry()
    recorder.sinks.append(ExchangeMetrics(registry, tracker=decode.tracker))
    exporter = None
    spans = None
    if span_processor is None:
        chosen = otlp_processor_from_env()
        if chosen is not None:
            span_processor, exporter = chosen
    if span_processor is not None:
        spans = SpanEmitter(span_processor, exporter=exporter)
        recorder.sinks.append(spans)
    live = LiveFeed(recorder)
    recorder.sinks.append(live)

    forwarder = OtlpForwarder(settings.otlp_forward) if settings.otlp_forward else None

    def on_spans(received: list[Any]) -> None:
        for span in received:
            recorder.add_record("otel_span", span)

    receiver = OtlpReceiver(on_spans, forwarder=forwarder)
    registry.register(RecorderCollector(recorder, in_flight))
    registry.register(CorrelationCollector(correlate, high_water=high_water, exporter=exporter,
                                           receiver=receiver, forwarder=forwarder))
    if scraper is not None:
        registry.register(scraper.collector(settings.engine_metrics_url))
    return RecordingSide(recorder, registry, correlate, scraper, receiver, forwarder, spans, live=live,
                         settings=settings, in_flight=in_flight, high_water=high_water)
