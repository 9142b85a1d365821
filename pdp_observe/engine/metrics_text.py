"""The query engine's ``/metrics`` document, parsed as the engine wrote it, bugs included.

The engine answers ``/metrics`` as Prometheus text or, when the query string contains
``format=json``, as ``{"counters", "gauges", "histograms"}`` (protocols.md A.8). Both become one
:class:`EngineMetrics`, so everything downstream (the pool view, the scraper, the re-export) is
format-blind.

Real engines get their own output wrong, and this module exists to *show* that, never to
repair it (protocols.md G): 4.7.1 types ``prisma_pool_connections_open`` ``counter`` and
``prisma_pool_connections_opened_total`` ``gauge``; deployments have been seen printing
``prisma_pool_connections_open`` twice with different types, one of them negative. Such facts
become :attr:`EngineMetrics.flags`; the values stay exactly as reported.

Like every parser here, these functions never raise on bad input: a garbage, truncated, empty
or HTML body comes back as an :class:`EngineMetrics` whose ``errors`` say what was wrong, with
every sample that could still be read.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

DOCUMENTED_TYPES: dict[str, str] = {
    "prisma_client_queries_total": "counter",
    "prisma_datasource_queries_total": "counter",
    "prisma_pool_connections_opened_total": "counter",
    "prisma_pool_connections_closed_total": "counter",
    "prisma_client_queries_active": "gauge",
    "prisma_client_queries_wait": "gauge",
    "prisma_pool_connections_open": "gauge",
    "prisma_pool_connections_busy": "gauge",
    "prisma_pool_connections_idle": "gauge",
    "prisma_client_queries_duration_histogram_ms": "histogram",
    "prisma_client_queries_wait_histogram_ms": "histogram",
    "prisma_datasource_queries_duration_histogram_ms": "histogram",
}
"""The 12 families of Prisma >= 4.2 and the type protocols.md A.8 documents for each."""

POOL_SOURCES: dict[str, tuple[str, ...]] = {
    "open": ("prisma_pool_connections_open",),
    "busy": ("prisma_pool_connections_busy", "pool_active_connections"),
    "idle": ("prisma_pool_connections_idle", "pool_idle_connections"),
    "waiting": ("prisma_client_queries_wait", "pool_wait_count"),
    "active": ("prisma_client_queries_active", "query_active_transactions"),
    "opened_total": ("prisma_pool_connections_opened_total",),
    "closed_total": ("prisma_pool_connections_closed_total",),
    "wait_hist": ("prisma_client_queries_wait_histogram_ms", "pool_wait_duration_ms"),
    "duration_hist": ("prisma_client_queries_duration_histogram_ms",
                      "query_operation_total_elapsed_time_ms"),
    "queries_total": ("prisma_client_queries_total", "query_total_operations"),
    "datasource_queries_total": ("prisma_datasource_queries_total", "query_total_queries"),
}
"""Pool-view key -> families to read it from, current name first, then the pre-4.2 name
(engines before 95a7e8a9a; mapping from reference/grafana/README.md)."""

POOL_KEYS: tuple[str, ...] = tuple(POOL_SOURCES)
_HIST_KEYS = frozenset({"wait_hist", "duration_hist"})

MAX_ERRORS = 20
"""Line errors kept per document; an HTML page would otherwise yield one per line."""

Number = int | float


@dataclass(slots=True)
class Sample:
    """One sample line: the name as written (``x_bucket``, ``x_sum`` …), labels, value."""

    name: str
    labels: dict[str, str]
    value: Number


@dataclass(slots=True)
class Family:
    """One ``# HELP``/``# TYPE`` block; ``type`` is what the document declared (``untyped`` if
    nothing), ``help`` is ``""`` for an empty HELP."""

    name: str
    type: str
    help: str
    samples: list[Sample] = field(default_factory=list)


@dataclass(slots=True)
class EngineMetrics:
    """One parsed ``/metrics`` answer.

    ``errors``: why (part of) the document could not be read; empty means it was read whole.
    ``flags``: engine bugs visible in this one document (``type_mismatch:<family>``,
    ``duplicate:<family>``, ``negative:<family>``), sorted. ``parser`` says which reader produced
    the families: ``prometheus_client``, ``lines`` (the fallback) or ``json``.
    """

    families: list[Family] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    format: str = "prometheus"
    parser: str = "prometheus_client"

    @property
    def ok(self) -> bool:
        return not self.errors

    def all(self, name: str) -> list[Family]:
        """Every family declared under ``name``, in document order (more than one is a bug)."""
        return [f for f in self.families if f.name == name]

    def family(self, name: str) -> Family | None:
        """The family to believe when ``name`` appears more than once: the one with the
        documented type, else the first."""
        found = self.all(name)
        if not found:
            return None
        want = DOCUMENTED_TYPES.get(name)
        for fam in found:
            if fam.type == want:
                return fam
        return found[0]


# ---------------------------------------------------------------------------------- Prometheus


def parse_prometheus(text: str | bytes) -> EngineMetrics:
    """Parse a Prometheus-text ``/metrics`` body; never raises.

    ``prometheus_client``'s parser reads it first. Its output is then put back into the
    document's own terms, because the library rewrites counters to OpenMetrics names (family
    ``x`` for ``x_total``, and samples ``x_total`` for a counter declared as ``x``: exactly the
    4.7.1 ``prisma_pool_connections_open`` bug this module must show) and folds a second
    declaration of the same name into the first when they are adjacent. When the library
    rejects the document, or folded declarations, every line is read on its own instead, so one
    bad line costs one sample, not the scrape.
    """
    m = EngineMetrics(format="prometheus")
    if isinstance(text, (bytes, bytearray, memoryview)):
        raw = bytes(text)
        text = raw.decode("utf-8", "replace")
        if "\ufffd" in text and b"\xef\xbf\xbd" not in raw:
            m.errors.append("body is not valid UTF-8")
    if not isinstance(text, str):
        m.errors.append(f"not text: {type(text).__name__}")
        return m
    head = text.lstrip()[:512]
    if not head:
        m.errors.append("empty body")
        return m
    low = head.lower()
    if low.startswith("<") and ("<html" in low or "<!doctype" in low or "<head" in low
                                or "<body" in low or "<?xml" in low):
        title = re.search(r"<title>(.*?)</title>", text[:4096], re.IGNORECASE | re.DOTALL)
        m.errors.append("HTML page, not Prometheus text"
                        + (f": {title.group(1).strip()[:120]!r}" if title else ""))
        return m
    if head[0] in "{[":
        m.errors.append("JSON body, not Prometheus text (parse it with parse_json)")
        return m

    declared = _declared_types(text)
    try:
        m.families = _from_library(text, declared)
    except Exception as exc:  # noqa: BLE001 - the library raises ValueError, IndexError… on bad text
        m.errors.append(f"prometheus_client rejected the document ({_short(exc)}); "
                        "read line by line")
        m.families, line_errors = _parse_lines(text)
        m.errors.extend(line_errors)
        m.parser = "lines"
    else:
        if any(len(m.all(name)) < n for name, n in Counter(n for n, _ in declared).items()):
            m.families, line_errors = _parse_lines(text)  # same text the library accepted
            m.errors.extend(line_errors)
            m.parser = "lines"
    m.errors.extend(_structure_errors(m.families))
    if not any(f.samples for f in m.families) and not m.errors:
        m.errors.append("no samples in the document")
    m.flags = _flags(m.families)
    return m


_TYPE_LINE = re.compile(r"^[ \t]*#[ \t]+TYPE[ \t]+(\S+)[ \t]+(\S+)", re.MULTILINE)


def _declared_types(text: str) -> list[tuple[str, str]]:
    """``(name, type)`` of every ``# TYPE`` line, in order."""
    return [(n, t) for n, t in _TYPE_LINE.findall(text)]


def _from_library(text: str, declared: list[tuple[str, str]]) -> list[Family]:
    """The library's families with the document's names and declared types restored."""
    counters = {n for n, t in declared if t == "counter"}
    types_of: dict[str, list[str]] = {}
    for n, t in declared:
        types_of.setdefault(n, []).append(t)
    seen: Counter[str] = Counter()
    out: list[Family] = []
    for metric in text_string_to_metric_families(text):
        name, samples = metric.name, [Sample(s.name, dict(s.labels), s.value) for s in metric.samples]
        if metric.type == "counter":
            if name + "_total" in counters:
                name = name + "_total"  # declared x_total; the library calls the family x
            else:  # declared x; the library renamed its samples x_total
                for s in samples:
                    if s.name == name + "_total":
                        s.name = name
        typ = metric.type
        decl = types_of.get(name)
        if decl and seen[name] < len(decl):
            typ = decl[seen[name]]
        elif typ == "unknown":
            typ = "untyped"
        if (typ == "untyped" and not decl and not metric.documentation and out
                and out[-1].name == name and out[-1].type == "untyped" and not out[-1].help):
            out[-1].samples.extend(samples)  # the library yields undeclared samples one by one
            continue
        seen[name] += 1
        out.append(Family(name, typ, metric.documentation, samples))
    return out


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[ \t]*(\{.*\})?[ \t]*(\S+)(?:[ \t]+(-?\d+))?[ \t]*$")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(,|$)')
_COMMENT = re.compile(r"^#[ \t]+(HELP|TYPE)[ \t]+([a-zA-Z_:][a-zA-Z0-9_:]*)(?:[ \t](.*))?$")
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count"),
             "gaugehistogram": ("_bucket", "_gsum", "_gcount")}


def _parse_lines(text: str) -> tuple[list[Family], list[str]]:
    """The fallback reader: one line at a time, keeping every sample it can read.

    A new ``# HELP``/``# TYPE`` for a name whose block already has samples (or a type) starts a
    new family, so a duplicate declaration stays visible instead of being merged.
    """
    families: list[Family] = []
    errors: list[str] = []
    rejected = 0
    cur: Family | None = None
    typed = False

    def reject(lineno: int, why: str, line: str) -> None:
        nonlocal rejected
        rejected += 1
        if len(errors) < MAX_ERRORS:
            errors.append(f"line {lineno}: {why}: {line[:80]!r}")

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            c = _COMMENT.match(line)
            if c is None:
                if re.match(r"#[ \t]+(HELP|TYPE)\b", line):
                    reject(lineno, "malformed HELP/TYPE line", line)
                continue  # any other comment is allowed
            kind, name, rest = c.group(1), c.group(2), (c.group(3) or "")
            same = cur is not None and cur.name == name
            if kind == "HELP":
                if not same or cur.samples:  # type: ignore[union-attr]
                    cur, typed = Family(name, "untyped", ""), False
                    families.append(cur)
                cur.help = _unescape_help(rest.strip())
            else:
                typ = rest.strip()
                if not typ or " " in typ:
                    reject(lineno, "malformed TYPE line", line)
                    continue
                if not same or cur.samples or typed:  # type: ignore[union-attr]
                    cur = Family(name, "untyped", "")
                    families.append(cur)
                cur.type, typed = typ, True
            continue
        s = _SAMPLE.match(line)
        if s is None:
            reject(lineno, "not a sample line", line)
            continue
        name, label_text, value_text = s.group(1), s.group(2), s.group(3)
        labels = _parse_labels(label_text[1:-1]) if label_text else {}
        if labels is None:
            reject(lineno, "bad labels", line)
            continue
        value = _number(value_text)
        if value is None:
            reject(lineno, "bad value", line)
            continue
        if cur is None or name not in _allowed_names(cur):
            cur, typed = Family(name, "untyped", ""), False
            families.append(cur)
        cur.samples.append(Sample(name, labels, value))
    if rejected > len(errors):
        errors.append(f"… {rejected - len(errors)} more lines rejected")
    return families, errors


def _allowed_names(fam: Family) -> tuple[str, ...]:
    return tuple(fam.name + sfx for sfx in _SUFFIXES.get(fam.type, ("",)))


def _parse_labels(body: str) -> dict[str, str] | None:
    labels: dict[str, str] = {}
    pos, body = 0, body.rstrip().rstrip(",")
    while pos < len(body):
        lm = _LABEL.match(body, pos)
        if lm is None or lm.group(1) in labels:
            return None
        labels[lm.group(1)] = re.sub(r"\\(.)", lambda e: "\n" if e.group(1) == "n" else e.group(1),
                                     lm.group(2))
        pos = lm.end()
    return labels


def _unescape_help(text: str) -> str:
    return re.sub(r"\\([\\n])", lambda e: "\n" if e.group(1) == "n" else "\\", text)


def _number(text: str) -> Number | None:
    """A sample value as the library reads it: int when it is one, else float."""
    if "_" in text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def _structure_errors(families: list[Family]) -> list[str]:
    """What a cut-off document looks like: a histogram without ``+Inf``/``_count``, or a last
    family with no samples. The engine always prints both in full (protocols.md A.8)."""
    errors = []
    for fam in families:
        if fam.type != "histogram" or not fam.samples:
            continue
        series: dict[tuple, set[str]] = {}
        for s in fam.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            parts = series.setdefault(key, set())
            if s.name == fam.name + "_bucket" and _le_key(s.labels.get("le", "")) == "+Inf":
                parts.add("+Inf")
            elif s.name == fam.name + "_count":
                parts.add("_count")
        for parts in series.values():
            if parts != {"+Inf", "_count"}:
                missing = sorted({"+Inf", "_count"} - parts)
                errors.append(f"histogram {fam.name} lacks {' and '.join(missing)} (truncated?)")
                break
    if families and not families[-1].samples:
        errors.append(f"last family {families[-1].name} has no samples (truncated?)")
    return errors


# ---------------------------------------------------------------------------------------- JSON


def parse_json(data: bytes | str | dict) -> EngineMetrics:
    """Parse a ``/metrics?format=json`` body (or its decoded object); never raises.

    The engine's JSON histograms carry *per-bucket* counts and no ``+Inf`` bucket (A.8); they
    are turned into the cumulative Prometheus form, with ``+Inf`` = ``count``, so a JSON scrape
    and a text scrape of the same state give the same families and the same pool view.
    """
    m = EngineMetrics(format="json", parser="json")
    obj: Any = data
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if isinstance(data, (bytes, str)):
        if not data.strip():
            m.errors.append("empty body")
            return m
        try:
            obj = json.loads(data)
        except RecursionError:
            m.errors.append("JSON nested too deeply")
            return m
        except UnicodeDecodeError:
            m.errors.append("body is not UTF-8")
            return m
        except ValueError as exc:
            m.errors.append(f"malformed JSON ({_short(exc)})")
            return m
    if not isinstance(obj, dict):
        m.errors.append(f"not a JSON object: {type(obj).__name__}")
        return m
    sections = [(k, t) for k, t in (("counters", "counter"), ("gauges", "gauge"),
                                    ("histograms", "histogram")) if k in obj]
    if not sections:
        m.errors.append("no counters/gauges/histograms: not an engine metrics document")
        return m
    for key, typ in sections:
        items = obj[key]
        if not isinstance(items, list):
            m.errors.append(f"{key} is not a list")
            continue
        by_name: dict[str, Family] = {}
        for i, item in enumerate(items):
            where = f"{key}[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"]:
                m.errors.append(f"{where}: no metric key")
                continue
            name = item["key"]
            raw_labels = item.get("labels") or {}
            if not isinstance(raw_labels, dict):
                m.errors.append(f"{where} ({name}): labels are not an object")
                continue
            labels = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw_labels.items()}
            fam = by_name.get(name)
            if fam is None:
                desc = item.get("description")
                fam = by_name[name] = Family(name, typ, desc if isinstance(desc, str) else "")
                m.families.append(fam)
            value = item.get("value")
            if typ != "histogram":
                if not _is_number(value):
                    m.errors.append(f"{where} ({name}): value is not a number")
                    continue
                fam.samples.append(Sample(name, labels, value))
                continue
            problem = _add_histogram(fam, labels, value)
            if problem:
                m.errors.append(f"{where} ({name}): {problem}")
    for fam in [f for f in m.families if not f.samples]:
        m.families.remove(fam)
    m.flags = _flags(m.families)
    return m


def _add_histogram(fam: Family, labels: dict[str, str], value: Any) -> str | None:
    if not isinstance(value, dict):
        return "histogram value is not an object"
    buckets, total, count = value.get("buckets"), value.get("sum"), value.get("count")
    if not isinstance(buckets, list) or not _is_number(total) or not _is_number(count):
        return "histogram needs buckets, sum and count"
    pairs = []
    for b in buckets:
        if not (isinstance(b, list) and len(b) == 2 and _is_number(b[0]) and _is_number(b[1])):
            return f"bad bucket {b!r}"[:120]
        pairs.append((float(b[0]), b[1]))
    pairs.sort(key=lambda p: p[0])
    cumulative: Number = 0
    for le, n in pairs:
        cumulative += n
        fam.samples.append(Sample(fam.name + "_bucket", {**labels, "le": _le_key(le)}, cumulative))
    if not pairs or not math.isinf(pairs[-1][0]):
        fam.samples.append(Sample(fam.name + "_bucket", {**labels, "le": "+Inf"}, count))
    fam.samples.append(Sample(fam.name + "_sum", dict(labels), total))
    fam.samples.append(Sample(fam.name + "_count", dict(labels), count))
    if cumulative > count:
        return f"buckets add up to {cumulative} > count {count}"
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ------------------------------------------------------------------------------ flags and pool


def _flags(families: list[Family]) -> list[str]:
    """Engine bugs visible in one document (see :class:`EngineMetrics`)."""
    flags = set()
    counts = Counter(f.name for f in families)
    for fam in families:
        if counts[fam.name] > 1:
            flags.add(f"duplicate:{fam.name}")
        want = DOCUMENTED_TYPES.get(fam.name)
        if want is not None and fam.type != want:
            flags.add(f"type_mismatch:{fam.name}")
        # Every engine counter and gauge is a count of something: below zero is a bug.
        if fam.type in ("counter", "gauge") and any(
                isinstance(s.value, (int, float)) and s.value < 0 for s in fam.samples):
            flags.add(f"negative:{fam.name}")
    return sorted(flags)


def pool_from(m: EngineMetrics) -> dict[str, Any]:
    """The connection-pool view of one document, values exactly as the engine reported them.

    Keys: :data:`POOL_KEYS`; ``None`` when the engine did not report it. ``wait_hist`` and
    ``duration_hist`` are ``{le: cumulative count}`` with ``le`` spelled as the engine prints it
    (``"0"``, ``"50000"``, ``"+Inf"``). A family printed twice is read from its documented-type
    copy (:meth:`EngineMetrics.family`); the ``duplicate:`` flag says it happened.
    """
    pool: dict[str, Any] = {}
    for key, names in POOL_SOURCES.items():
        pool[key] = None
        for name in names:
            fam = m.family(name)
            if fam is None:
                continue
            got = _histogram(fam) if key in _HIST_KEYS else _scalar(fam)
            if got is not None:
                pool[key] = got
                break
    return pool


def _scalar(fam: Family) -> Number | None:
    for s in fam.samples:
        if s.name == fam.name:
            return s.value
    return None


def _histogram(fam: Family) -> dict[str, Number] | None:
    """The first series' buckets (one engine = one series per family: no intrinsic labels)."""
    out: dict[str, Number] = {}
    first: tuple | None = None
    for s in fam.samples:
        if s.name != fam.name + "_bucket" or "le" not in s.labels:
            continue
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        if first is None:
            first = key
        if key == first:
            out[_le_key(s.labels["le"])] = s.value
    return out or None


def _le_key(le: str | float) -> str:
    """A bucket bound as the engine prints it: ``0``, ``50000``, ``+Inf``, ``0.5``."""
    try:
        x = float(le)
    except (TypeError, ValueError):
        return str(le)
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:160]
