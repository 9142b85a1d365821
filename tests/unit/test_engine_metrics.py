"""The engine's /metrics documents: real 4.7.1 scrapes and a real deployment's sample.

Expected numbers are read from the fixture files by the small regexes below, never from the
parser under test, so a parser bug cannot hide behind its own output.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from pdp_observe.engine.metrics_text import (
    DOCUMENTED_TYPES,
    POOL_KEYS,
    EngineMetrics,
    parse_json,
    parse_prometheus,
    pool_from,
)
from pdp_observe.engine.scraper import PoolSample, PoolTracker

FIX = Path(__file__).resolve().parent.parent / "fixtures"
SEED = (FIX / "metrics" / "seed-metrics.txt").read_text()
RECORDED = [json.loads(line) for line in (FIX / "metrics" / "metrics.jsonl").read_text().splitlines()]

_LINE = re.compile(r"^([a-z_]+)(?:\{([^}]*)\})? (-?[0-9.]+)$")


def doc_samples(text: str) -> list[tuple[str, str, float]]:
    """(name, raw label text, value) of every sample line, by plain regex."""
    out = []
    for line in text.splitlines():
        if (mo := _LINE.match(line)) is not None:
            out.append((mo.group(1), mo.group(2) or "", float(mo.group(3))))
    return out


def doc_value_after_type(text: str, name: str, typ: str) -> float:
    """The sample that follows ``# TYPE name typ`` (for a name printed twice)."""
    mo = re.search(rf"^# TYPE {name} {typ}\n{name} (-?\d+)$", text, re.MULTILINE)
    assert mo, (name, typ)
    return float(mo.group(1))


def doc_buckets(text: str, hist: str) -> dict[str, float]:
    return {le: float(v) for le, v in re.findall(rf'^{hist}_bucket\{{le="([^"]+)"\}} (\d+)$', text, re.MULTILINE)}


def parsed(entry: dict) -> EngineMetrics:
    return parse_prometheus(entry["body"]) if entry["format"] == "prometheus" else parse_json(entry["body"])


# ------------------------------------------------------------------------------------ the seed


def test_seed_every_sample_exact() -> None:
    m = parse_prometheus(SEED)
    assert m.errors == []
    got = sorted((s.name, ",".join(f'{k}="{v}"' for k, v in s.labels.items()), float(s.value))
                 for f in m.families for s in f.samples)
    assert got == sorted(doc_samples(SEED))
    assert len(got) == 3 * 13 + 10  # 10 scalar lines + 3 histograms of 13 lines


def test_seed_pool_values_as_printed() -> None:
    pool = pool_from(parse_prometheus(SEED))
    assert set(pool) == set(POOL_KEYS)
    single = {name: v for name, _, v in doc_samples(SEED) if name != "prisma_pool_connections_open"}
    assert pool["busy"] == single["prisma_pool_connections_busy"] == 0
    assert pool["idle"] == single["prisma_pool_connections_idle"] == 17
    assert pool["waiting"] == single["prisma_client_queries_wait"]
    assert pool["active"] == single["prisma_client_queries_active"]
    assert pool["opened_total"] == single["prisma_pool_connections_opened_total"] == 11
    assert pool["closed_total"] == single["prisma_pool_connections_closed_total"] == 9
    assert pool["queries_total"] == single["prisma_client_queries_total"] == 442
    assert pool["datasource_queries_total"] == single["prisma_datasource_queries_total"] == 1780
    # Printed twice: counter 11 and gauge -9. The documented type (gauge) is read, unrepaired.
    assert pool["open"] == doc_value_after_type(SEED, "prisma_pool_connections_open", "gauge") == -9
    assert pool["wait_hist"] == doc_buckets(SEED, "prisma_client_queries_wait_histogram_ms")
    assert pool["duration_hist"] == doc_buckets(SEED, "prisma_client_queries_duration_histogram_ms")
    assert pool["wait_hist"]["1"] == 53 and pool["wait_hist"]["+Inf"] == 53
    assert pool["duration_hist"]["5"] == 11 and pool["duration_hist"]["10"] == 202


def test_seed_duplicate_and_negative_shown_and_flagged() -> None:
    m = parse_prometheus(SEED)
    both = m.all("prisma_pool_connections_open")
    assert [(f.type, f.samples[0].value) for f in both] == [
        ("counter", doc_value_after_type(SEED, "prisma_pool_connections_open", "counter")),
        ("gauge", doc_value_after_type(SEED, "prisma_pool_connections_open", "gauge"))]
    assert [s.name for f in both for s in f.samples] == ["prisma_pool_connections_open"] * 2
    assert m.flags == ["duplicate:prisma_pool_connections_open",
                       "negative:prisma_pool_connections_open",
                       "type_mismatch:prisma_pool_connections_open",
                       "type_mismatch:prisma_pool_connections_opened_total"]
    assert m.family("prisma_pool_connections_opened_total").type == "gauge"  # as declared


# ------------------------------------------------------------------------ the recorded scrapes


def test_recorded_all_72_parse_whole() -> None:
    assert len(RECORDED) == 72
    for entry in RECORDED:
        m = parsed(entry)
        assert m.errors == [], (entry["t"], m.errors)
        names = re.findall(r"# TYPE (\S+) ", entry["body"]) if entry["format"] == "prometheus" else [
            i["key"] for k in ("counters", "gauges", "histograms") for i in json.loads(entry["body"])[k]]
        assert [f.name for f in m.families] == names


def test_recorded_prometheus_and_json_agree() -> None:
    pairs = 0
    for a, b in zip(RECORDED[0::2], RECORDED[1::2]):
        assert (a["format"], b["format"]) == ("prometheus", "json") and b["t"] - a["t"] < 0.05
        pa, pb = pool_from(parsed(a)), pool_from(parsed(b))
        assert pa == pb, a["t"]
        # the text's own numbers, by regex
        for key, name in (("waiting", "prisma_client_queries_wait"), ("busy", "prisma_pool_connections_busy"),
                          ("idle", "prisma_pool_connections_idle"), ("open", "prisma_pool_connections_open")):
            assert pa[key] == float(re.search(rf"^{name} (\d+)$", a["body"], re.MULTILINE).group(1))
        assert pa["wait_hist"] == doc_buckets(a["body"], "prisma_client_queries_wait_histogram_ms")
        pairs += 1
    assert pairs == 36


def test_recorded_json_buckets_made_cumulative() -> None:
    entry = RECORDED[-1]
    raw = {h["key"]: h["value"] for h in json.loads(entry["body"])["histograms"]}
    wait = raw["prisma_client_queries_wait_histogram_ms"]
    pool = pool_from(parse_json(entry["body"]))
    running = 0
    for le, n in wait["buckets"]:
        running += n
        assert pool["wait_hist"][str(int(le))] == running
    assert pool["wait_hist"]["+Inf"] == wait["count"]


def test_recorded_471_type_swaps_flagged_every_scrape() -> None:
    for entry in RECORDED:
        assert parsed(entry).flags == ["type_mismatch:prisma_pool_connections_open",
                                       "type_mismatch:prisma_pool_connections_opened_total"]
    m = parse_prometheus(RECORDED[0]["body"])
    assert m.family("prisma_pool_connections_open").type == "counter"
    assert m.family("prisma_pool_connections_open").samples[0].name == "prisma_pool_connections_open"
    assert m.family("prisma_pool_connections_opened_total").type == "gauge"


def _p2024_times() -> list[float]:
    """When the engine answered P2024 in the same run (the exchanges, not the metrics)."""
    times = []
    for line in (FIX / "recorded" / "qe471.jsonl").read_text().splitlines():
        ex = json.loads(line)
        if b'"P2024"' in base64.b64decode(ex["resp_body_b64"]):
            times.append(ex["t_response_end"])
    return sorted(times)


def test_stuck_wait_after_the_p2024s_not_before() -> None:
    p2024 = _p2024_times()
    assert len(p2024) == 8
    tracker = PoolTracker()
    samples = [tracker.observe(e["t"], parsed(e)) for e in RECORDED]
    stuck = [s for s in samples if "stuck_wait" in s.flags]
    before = [s for s in samples if s.t < p2024[0]]
    # the burst really saturated the pool before the timeouts: waiting > 0 there, not stuck
    assert any(s.pool["waiting"] > 0 for s in before)
    assert not any("stuck_wait" in s.flags for s in before)
    assert stuck and stuck[0].t > p2024[0] and stuck[0].t - p2024[0] < 0.5
    # once raised, it stays: the wait gauge never comes back down on 4.7.1 (4, then 8)
    assert all("stuck_wait" in s.flags for s in samples if s.t >= stuck[0].t)
    assert samples[-1].pool["waiting"] == 8 and samples[-1].pool["busy"] == 0


def test_stuck_wait_not_for_real_saturation_and_clears_at_zero() -> None:
    def doc(waiting: int, busy: int, idle: int, opened: int = 2) -> EngineMetrics:
        return parse_prometheus(
            f"# TYPE prisma_client_queries_wait gauge\nprisma_client_queries_wait {waiting}\n"
            f"# TYPE prisma_pool_connections_busy gauge\nprisma_pool_connections_busy {busy}\n"
            f"# TYPE prisma_pool_connections_idle gauge\nprisma_pool_connections_idle {idle}\n"
            f"# TYPE prisma_pool_connections_open gauge\nprisma_pool_connections_open {opened}\n")

    tracker = PoolTracker()
    saturated = [tracker.observe(i, doc(6, 2, 0)) for i in range(10)]
    assert not any("stuck_wait" in s.flags for s in saturated)
    flags = [tracker.observe(10 + i, doc(3, 0, 2)).flags for i in range(4)]
    assert ["stuck_wait" in f for f in flags] == [False, False, True, True]
    assert "stuck_wait" in tracker.observe(20, doc(7, 2, 0)).flags  # phantoms still counted
    assert "stuck_wait" not in tracker.observe(21, doc(0, 0, 2)).flags


def test_wait_delta_never_negative_and_sums_up() -> None:
    tracker = PoolTracker()
    samples = [tracker.observe(e["t"], parsed(e)) for e in RECORDED]
    assert samples[0].wait_delta is None
    total: dict[str, float] = {}
    for s in samples[1:]:
        assert s.wait_delta is not None and min(s.wait_delta.values()) >= 0
        for le, n in s.wait_delta.items():
            total[le] = total.get(le, 0) + n
    first, last = samples[0].pool["wait_hist"], samples[-1].pool["wait_hist"]
    assert total == {le: last[le] - first[le] for le in last}
    assert tracker.resets == 0


def test_wait_delta_counter_reset() -> None:
    def doc(n1: int, n5: int) -> EngineMetrics:
        return parse_prometheus(
            "# TYPE prisma_client_queries_wait_histogram_ms histogram\n"
            f'prisma_client_queries_wait_histogram_ms_bucket{{le="1"}} {n1}\n'
            f'prisma_client_queries_wait_histogram_ms_bucket{{le="5"}} {n5}\n'
            f'prisma_client_queries_wait_histogram_ms_bucket{{le="+Inf"}} {n5}\n'
            f"prisma_client_queries_wait_histogram_ms_sum 1\nprisma_client_queries_wait_histogram_ms_count {n5}\n")

    tracker = PoolTracker()
    tracker.observe(1, doc(10, 12))
    grown = tracker.observe(2, doc(11, 15))
    assert grown.wait_delta == {"1": 1, "5": 3, "+Inf": 3} and "wait_hist_reset" not in grown.flags
    reset = tracker.observe(3, doc(2, 2))  # engine restarted
    assert reset.wait_delta == {"1": 2, "5": 2, "+Inf": 2}
    assert "wait_hist_reset" in reset.flags and tracker.resets == 1
    assert tracker.observe(4, doc(3, 4)).wait_delta == {"1": 1, "5": 2, "+Inf": 2}


def test_pool_sample_to_dict_stable_keys() -> None:
    s = PoolTracker().observe(5.0, parse_prometheus(SEED))
    d = s.to_dict()
    assert list(d) == ["t", "pool", "flags", "wait_delta"]
    assert list(d["pool"]) == list(POOL_KEYS)
    assert json.loads(json.dumps(d)) == d
    empty = PoolSample(1.0, {}).to_dict()
    assert list(empty["pool"]) == list(POOL_KEYS) and all(v is None for v in empty["pool"].values())


# -------------------------------------------------------------------------- other documents


def test_pre_4_2_names_map_to_the_same_keys() -> None:
    text = ("# TYPE pool_active_connections gauge\npool_active_connections 3\n"
            "# TYPE pool_idle_connections gauge\npool_idle_connections 7\n"
            "# TYPE pool_wait_count gauge\npool_wait_count 1\n"
            "# TYPE query_active_transactions gauge\nquery_active_transactions 2\n"
            "# TYPE query_total_operations counter\nquery_total_operations 40\n"
            "# TYPE query_total_queries counter\nquery_total_queries 90\n"
            "# TYPE pool_wait_duration_ms histogram\n"
            'pool_wait_duration_ms_bucket{le="1"} 4\npool_wait_duration_ms_bucket{le="+Inf"} 5\n'
            "pool_wait_duration_ms_sum 9\npool_wait_duration_ms_count 5\n")
    m = parse_prometheus(text)
    assert m.errors == [] and m.flags == []
    pool = pool_from(m)
    assert (pool["busy"], pool["idle"], pool["waiting"], pool["active"]) == (3, 7, 1, 2)
    assert (pool["queries_total"], pool["datasource_queries_total"]) == (40, 90)
    assert pool["wait_hist"] == {"1": 4, "+Inf": 5}
    assert pool["open"] is None and pool["duration_hist"] is None


def test_engine_examples_json_and_text() -> None:
    text = (FIX / "examples" / "metrics-prometheus-format.txt").read_text()
    tm = parse_prometheus(text)
    jm = parse_json((FIX / "examples" / "metrics-json-format.json").read_bytes())
    assert tm.errors == [] and jm.errors == []
    assert tm.family("counter_1").help == ""  # "# HELP counter_1 " (empty description)
    assert tm.family("gauge_1").samples[0].value == 7
    # histogram_1 is the same state in both examples: JSON per-bucket -> cumulative
    jb = {s.labels["le"]: s.value for s in jm.family("histogram_1").samples if s.name.endswith("_bucket")}
    tb = {le: float(v) for le, v in re.findall(r'^histogram_1_bucket\{.*le="([^"]+)"\} (\d+)$', text, re.MULTILINE)}
    assert jb == tb
    assert jm.family("histogram_1").samples[0].labels == {"label": "one", "hist_two": "two", "le": "0"}
    assert {f.name: f.type for f in jm.families} == {"counter_1": "counter", "counter_2": "counter",
                                                     "gauge_1": "gauge", "gauge_2": "gauge",
                                                     "histogram_1": "histogram", "histogram_2": "histogram"}


def test_help_type_lines_of_the_12_families() -> None:
    text = (FIX / "examples" / "metrics-prometheus-prisma-help-type-lines.txt").read_text()
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    assert declared == DOCUMENTED_TYPES


def test_adjacent_duplicate_declarations_kept_apart() -> None:
    # prometheus_client folds these into one family; the line reader keeps both.
    m = parse_prometheus("# TYPE prisma_pool_connections_open counter\nprisma_pool_connections_open 11\n"
                         "# TYPE prisma_pool_connections_open gauge\nprisma_pool_connections_open -9\n")
    assert m.errors == [] and m.parser == "lines"
    assert [(f.type, f.samples[0].value) for f in m.families] == [("counter", 11), ("gauge", -9)]
    assert pool_from(m)["open"] == -9
    assert "duplicate:prisma_pool_connections_open" in m.flags


def test_one_bad_line_costs_one_sample() -> None:
    lines = SEED.splitlines()
    i = lines.index("prisma_pool_connections_busy 0")
    broken = "\n".join(lines[:i] + ["prisma_pool_connections_busy zero"] + lines[i + 1:])
    m = parse_prometheus(broken)
    assert m.parser == "lines" and len(m.errors) == 2
    assert "prometheus_client rejected" in m.errors[0] and "zero" in m.errors[1]
    pool = pool_from(m)
    assert pool["busy"] is None and pool["idle"] == 17 and pool["open"] == -9
    assert pool["wait_hist"] == doc_buckets(SEED, "prisma_client_queries_wait_histogram_ms")
    assert "duplicate:prisma_pool_connections_open" in m.flags


HTML = ("<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
        "<body><h1>Bad Gateway</h1>\nError 502\n</body></html>\n")


@pytest.mark.parametrize("body", [
    "", "   \n\n", "garbage", "garbage here\nmore garbage", HTML, "Error 502 Bad Gateway",
    '{"counters": []}', "\x00\x01\x02", "prisma_client_queries_total{le=\"1\" 3",
    "# TYPE prisma_client_queries_total counter\n",
])
def test_bad_text_gives_errors_not_exceptions(body: str) -> None:
    m = parse_prometheus(body)
    assert m.errors
    assert pool_from(m)["open"] is None


def test_html_page_is_not_read_as_samples() -> None:
    m = parse_prometheus(HTML.encode())
    assert m.families == [] and "502 Bad Gateway" in m.errors[0]


@pytest.mark.parametrize("cut_at", [
    "prisma_client_queries_wait_histogram_ms_bucket{le=\"500\"} 53",  # between buckets
    "prisma_client_queries_wait_histogram_ms_bucket{le=\"50",          # inside a label
    "prisma_client_queries_wait_histogram_ms_sum 0.2",                 # before _count
    "# TYPE prisma_datasource_queries_duration_histogram_ms histogram",  # after a TYPE
    "prisma_pool_connections_idle 1",                                  # inside a value...
])
def test_truncated_text_gives_errors(cut_at: str) -> None:
    text = SEED[:SEED.index(cut_at) + len(cut_at)]
    m = parse_prometheus(text)
    if cut_at.startswith("prisma_pool_connections_idle"):
        # ... a cut inside the last number of a scalar reads as a whole document: only the
        # transport (Content-Length / chunked framing) can tell. The value read is still real text.
        assert pool_from(m)["idle"] == 1
        return
    assert m.errors, cut_at


def test_every_prefix_and_bytes_never_raise() -> None:
    for n in range(0, len(SEED), 7):
        parse_prometheus(SEED[:n])
        parse_prometheus(SEED[:n].encode()[:-1] + b"\xff")
    body = RECORDED[1]["body"]
    for n in range(0, len(body), 11):
        m = parse_json(body[:n])
        assert m.errors


@pytest.mark.parametrize("data", [
    b"", "   ", "garbage", "[1, 2]", "null", b"\xff\xfe{", HTML, {"counters": "nope"}, {"nothing": 1},
    {"counters": [{"key": 3}, {"key": "a", "value": "x"}, "str"]},
    {"histograms": [{"key": "h", "value": {"buckets": [[1.0]], "sum": 1, "count": 1}}]},
    {"histograms": [{"key": "h", "value": {"buckets": [[1.0, 5]], "sum": 1, "count": 2}}]},
    "[" * 100000,
])
def test_bad_json_gives_errors_not_exceptions(data: object) -> None:
    m = parse_json(data)  # type: ignore[arg-type]
    assert m.errors


def test_json_duplicate_key_across_sections_flagged() -> None:
    m = parse_json({"counters": [{"key": "prisma_pool_connections_open", "labels": {}, "value": 11}],
                    "gauges": [{"key": "prisma_pool_connections_open", "labels": {}, "value": -9.0}]})
    assert m.errors == []
    assert m.flags == ["duplicate:prisma_pool_connections_open", "negative:prisma_pool_connections_open",
                       "type_mismatch:prisma_pool_connections_open"]
    assert pool_from(m)["open"] == -9.0


def test_undeclared_series_stay_one_family() -> None:
    m = parse_prometheus('prisma_x{a="1"} 1\nprisma_x{a="2"} 2\nprisma_y 3\n')
    assert m.errors == [] and m.flags == []
    assert [(f.name, f.type, len(f.samples)) for f in m.families] == [("prisma_x", "untyped", 2),
                                                                      ("prisma_y", "untyped", 1)]
