"""Settings, declared once: each field becomes a ``--flag`` and a ``PDP_*`` environment variable.

Precedence is flag > environment > default, the usual order for a container sidecar where the
compose file sets environment and a person debugging adds a flag. Help texts live next to the
field so ``pdp-observe proxy --help`` can never drift from what the code reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str | int) -> int:
    """``"1MiB"`` → 1048576. ``0`` (or ``"0"``, ``"off"``) means "no limit" where a limit is optional."""
    if isinstance(text, int):
        return text
    s = str(text).strip().lower().replace(" ", "")
    if s in ("off", "none", "unlimited"):
        return 0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", s)
    if not m or m.group(2) not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (try 1048576, 512KiB, 1MiB, 2GB)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_duration(text: str | float) -> float:
    """``"7d"`` → 604800.0 seconds; a bare number is seconds. ``0``/``"off"`` disables."""
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip().lower().replace(" ", "")
    if s in ("off", "none"):
        return 0.0
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|)", s)
    if not m:
        raise ValueError(f"not a duration: {text!r} (try 30s, 5m, 12h, 7d)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_hostport(text: str) -> tuple[str, int]:
    """``"127.0.0.1:4466"`` / ``"[::1]:4466"`` / ``":4466"`` → (host, port)."""
    s = text.strip()
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", s)
    if not m:
        raise ValueError(f"not host:port: {text!r} (try 127.0.0.1:4466 or [::1]:4466)")
    host = m.group(1) or m.group(3) or "127.0.0.1"
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    s = str(text).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true/false)")


def parse_auto_bool(text: str | bool | None) -> bool | None:
    """A boolean, or ``auto`` (None): the program decides from the machine."""
    if text is None or str(text).strip().lower() == "auto":
        return None
    return parse_bool(text)


STORE_PROCESS_MIN_CPUS = 3
"""Below this many CPUs for the recorder, ``--store-process auto`` is off. Measured on 2 cores
at the same paced load (bench/README): without it recording took ~10 µs less CPU per exchange
(the pipe, and two busy processes slowing each other on shared cores) and stored as much or
more; a third process only pays when a core would otherwise sit idle."""


def store_process_wanted(setting: bool | None, cpus: int) -> bool:
    """``--store-process`` as given, or for ``auto`` whether the recorder has cores to spare."""
    return setting if setting is not None else cpus >= STORE_PROCESS_MIN_CPUS


def parse_cpus(text: str) -> set[int]:
    """``"0"``, ``"0,2"``, ``"0-3"`` → a CPU set (as taskset takes it)."""
    cpus: set[int] = set()
    for part in parse_list(text):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"not a CPU list: {text!r} (try 0, 0,2 or 0-3)")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def parse_recorder(text: str) -> str:
    if text not in ("process", "inline"):
        raise ValueError(f"--recorder is 'process' or 'inline', not {text!r}")
    return text


def parse_upstream_kind(text: str) -> str:
    kinds = ("auto", "engine", "dataproxy", "qpe")
    if text not in kinds:
        raise ValueError(f"--upstream-kind is one of {', '.join(kinds)}, not {text!r}")
    return text


def parse_list(text: str | list[str]) -> list[str]:
    if isinstance(text, list):
        return text
    return [p.strip() for p in str(text).split(",") if p.strip()]


def _opt(default: Any, help: str, *, parse: Callable[[Any], Any] | None = None,
         metavar: str | None = None, repeat: bool = False, secret: bool = False) -> Any:
    """A settings field; ``secret`` ones are left out of ``repr`` (and so of logged settings)."""
    meta = {"help": help, "parse": parse, "metavar": metavar, "repeat": repeat, "secret": secret}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta, repr=not secret)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost`` only: any other address or name may be reachable."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


@dataclass(slots=True)
class Settings:
    """Everything ``pdp-observe proxy`` can be told. Sizes and durations accept units."""

    upstream: str = _opt("", "Base URL of the Prisma server to forward to (query engine, Data Proxy "
                         "or Prisma 7 query-plan executor), e.g. http://127.0.0.1:4467. Required.",
                         metavar="URL")
    listen: str = _opt("127.0.0.1:4466", "Address the Prisma client connects to (point its URL here).",
                       metavar="HOST:PORT")
    db: str = _opt("captures.db", "SQLite capture file (created if missing; WAL mode).", metavar="PATH")
    admin_listen: str = _opt("127.0.0.1:9466", "Admin listener: /healthz, /metrics and the management "
                             "API (/api/v1, see docs/api.md). 'off' disables it. Binding it to anything "
                             "but loopback needs --admin-token.", metavar="HOST:PORT")
    admin_token: str = _opt("", "Bearer token the management API (/api/v1) requires "
                            "(Authorization: Bearer <token>); /healthz and /metrics stay open. "
                            "Prefer the environment variable: a flag shows in `ps`.", metavar="TOKEN",
                            secret=True)
    preserve_host: bool = _opt(False, "Forward the client's Host header instead of the upstream's.",
                               parse=parse_bool)
    forwarded_headers: bool = _opt(True, "Add X-Forwarded-For/-Proto/-Host to forwarded requests.",
                                   parse=parse_bool)
    rewrite_itx_endpoint: bool = _opt(True, "Data Proxy: when a transaction/start answer names the "
                                      "upstream as the itx endpoint, name the sidecar instead, so the "
                                      "transaction's requests stay observable.", parse=parse_bool)
    connect_timeout: float = _opt(5.0, "Upstream connect timeout; on expiry the client gets a 504.",
                                  parse=parse_duration, metavar="DURATION")
    read_timeout: float = _opt(300.0, "Upstream read timeout (max silence while waiting for bytes); "
                               "on expiry the client gets a 504.", parse=parse_duration, metavar="DURATION")
    upstream_pool_size: int = _opt(100, "Most connections kept open to the upstream.", parse=int, metavar="N")
    capture_body_limit: int = _opt(1024**2, "Bytes of each body (per direction) kept in the capture; "
                                   "the full size and sha256 are always kept.", parse=parse_size,
                                   metavar="SIZE")
    max_db_size: int = _opt(1024**3, "Prune the oldest captures when the store grows past this "
                            "('0' = no limit; its write-ahead log adds up to 64MiB beside it).", parse=parse_size, metavar="SIZE")
    max_age: float = _opt(7 * 86400.0, "Prune captures older than this ('0' = keep forever).",
                          parse=parse_duration, metavar="DURATION")
    queue_max: int = _opt(10000, "Most exchanges waiting to be written; past it captures are "
                          "dropped (and counted), never the traffic.", parse=int, metavar="N")
    queue_max_bytes: int = _opt(64 * 1024**2, "Most captured body bytes waiting to be written; "
                                "past it captures are dropped (and counted).", parse=parse_size,
                                metavar="SIZE")
    recorder: str = _opt("process", "Where captures are processed and stored: 'process' (a recorder "
                         "process beside the proxy: the request path never waits for the GIL) or "
                         "'inline' (a thread in the proxy process).", parse=parse_recorder, metavar="MODE")
    recorder_cpus: str = _opt("", "CPUs for the recorder process (taskset syntax, e.g. 0 or 0-3); "
                              "default: those of the proxy.", metavar="CPUS")
    recorder_nice: int = _opt(10, "Scheduling niceness added to the recorder process: when CPU is "
                              "short, forwarding traffic wins over recording it (0 = same priority).",
                              parse=int, metavar="N")
    recorder_idle: bool = _opt(False, "Run the recorder process under the SCHED_IDLE policy instead of "
                               "niced: it only gets CPU time nothing else on the machine wants, so it "
                               "may share the proxy's cores (captures it cannot keep up with are dropped "
                               "and counted). Measured on 2 cores: stores no more, adds ~0.08 ms p50.")
    store_process: bool | None = _opt(None, "With the recorder process: commit to SQLite from a third "
                                      "process while the recorder builds the next rows, so recording uses "
                                      "idle time on two cores at once (--no-store-process: the recorder "
                                      "commits itself). Default auto: on when the recorder may use 3 or "
                                      "more CPUs (on fewer the extra process costs more CPU than it frees).",
                                      parse=parse_auto_bool)
    redact_header: list[str] = _opt([], "Extra header name to redact (repeatable; "
                                    "Authorization, Proxy-Authorization, Cookie, Set-Cookie always are).",
                                    parse=parse_list, metavar="NAME", repeat=True)
    redact_param: list[str] = _opt([], "Extra query/URL parameter to redact (repeatable; "
                                   "api_key, apikey, token always are).", parse=parse_list,
                                   metavar="NAME", repeat=True)
    capture_telemetry: bool = _opt(True, "Ask the upstream for its telemetry (spans, SQL with timings) "
                                   "on every query by adding capture tokens to X-Capture-Telemetry "
                                   "(merged with the client's own); what the client did not ask for is "
                                   "removed from the answer before it reaches the client.", parse=parse_bool)
    upstream_kind: str = _opt("auto", "What the upstream is: engine (query-engine HTTP API), dataproxy, "
                              "qpe (Prisma 7 query-plan executor) or auto (learnt from the traffic). "
                              "Decides which capture tokens it accepts.", parse=parse_upstream_kind,
                              metavar="KIND")
    propagate_trace: bool = _opt(True, "Forward a W3C traceparent naming the sidecar's span (a child "
                                 "of the client's, when it sent one).", parse=parse_bool)
    engine_metrics_url: str = _opt("", "Engine /metrics to scrape for connection-pool gauges and "
                                   "histograms, e.g. http://127.0.0.1:4467/metrics (add ?format=json "
                                   "for the JSON form). Empty: no scraping.", metavar="URL")
    engine_metrics_interval: float = _opt(1.0, "How often the engine's /metrics is scraped.",
                                          parse=parse_duration, metavar="DURATION")
    otlp_forward: str = _opt("", "Forward spans received on the admin listener's /v1/traces (from "
                             "engines started with --enable-open-telemetry) to this OTLP/HTTP "
                             "collector base URL. The sidecar's own spans go to "
                             "OTEL_EXPORTER_OTLP_ENDPOINT (standard OTel variables).", metavar="URL")
    log_level: str = _opt("info", "Log level: debug, info, warning, error.", metavar="LEVEL")

    @property
    def listen_addr(self) -> tuple[str, int]:
        return parse_hostport(self.listen)

    @property
    def admin_addr(self) -> tuple[str, int] | None:
        if self.admin_listen.strip().lower() in ("", "off", "none", "0"):
            return None
        return parse_hostport(self.admin_listen)

    def validate(self) -> None:
        """Fail early with a message a person can act on (not a traceback mid-traffic)."""
        if not self.upstream:
            raise ValueError("--upstream is required (or set PDP_UPSTREAM), e.g. http://127.0.0.1:4467")
        if not re.match(r"^https?://[^/]+", self.upstream):
            raise ValueError(f"--upstream must be an http:// or https:// URL, got {self.upstream!r}")
        self.listen_addr  # noqa: B018 - parse for the error message
        admin = self.admin_addr
        if admin is not None and not self.admin_token and not is_loopback(admin[0]):
            raise ValueError(
                f"--admin-listen {self.admin_listen} can be reached from other hosts, and its management "
                "API (/api/v1) shows captured requests and can replay them: set --admin-token (or "
                "PDP_ADMIN_TOKEN) to require a bearer token, or bind it to 127.0.0.1")
        parse_recorder(self.recorder)
        parse_upstream_kind(self.upstream_kind)
        for name in ("engine_metrics_url", "otlp_forward"):
            value = getattr(self, name)
            if value and not re.match(r"^https?://[^/]+", value):
                raise ValueError(f"{flag_name(name)} must be an http:// or https:// URL, got {value!r}")
        if self.recorder_cpus:
            parse_cpus(self.recorder_cpus)
        if self.capture_body_limit < 0 or self.queue_max < 1:
            raise ValueError("--capture-body-limit must be >= 0 and --queue-max >= 1")


def env_name(name: str) -> str:
    return "PDP_" + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type = Settings) -> None:
    """Add one flag per settings field; help shows the default and the env variable."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{meta['help']} [env {env_name(f.name)}; default: {_show_default(f.name, default)}]"
        if f.type in ("bool", bool, "bool | None"):
            parser.add_argument(flag_name(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        elif meta.get("repeat"):
            parser.add_argument(flag_name(f.name), dest=f.name, action="append", default=None,
                                metavar=meta.get("metavar"), help=help_text)
        else:
            parser.add_argument(flag_name(f.name), dest=f.name, default=None,
                                metavar=meta.get("metavar"), help=help_text)


def _show_default(name: str, value: Any) -> str:
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(value) or "none"
    if name in ("capture_body_limit", "max_db_size", "queue_max_bytes") and value:
        for unit, mult in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value % mult == 0:
                return f"{value // mult}{unit}"
    if name in ("max_age",) and value and value % 86400 == 0:
        return f"{int(value // 86400)}d"
    if name.endswith("timeout") or name.endswith("interval"):
        return f"{value:g}s"
    return str(value)


def from_sources(args: argparse.Namespace | None = None, env: dict[str, str] | None = None,
                 cls: type = Settings) -> Any:
    """Build settings from parsed flags, then ``PDP_*`` env, then defaults; values are parsed."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        raw = getattr(args, f.name, None) if args is not None else None
        source = flag_name(f.name)
        if raw is None and env_name(f.name) in env:
            raw, source = env[env_name(f.name)], env_name(f.name)
        if raw is None:
            continue
        parse = f.metadata.get("parse")
        try:
            if f.metadata.get("repeat") and isinstance(raw, list):
                values[f.name] = [item for r in raw for item in parse_list(r)]
            else:
                values[f.name] = parse(raw) if parse else raw
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
    return cls(**values)
