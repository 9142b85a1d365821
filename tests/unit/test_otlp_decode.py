"""decode_traces: OTLP/HTTP protobuf and JSON bodies → ReceivedSpan, and every way to fail."""

from __future__ import annotations

import base64
import gzip
import json
import zlib

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from pdp_observe.engine.otlp import OtlpDecodeError, ReceivedSpan, decode_traces, traces_url

PB = "application/x-protobuf"
JS = "application/json"

TRACE = "5b8efff798038103d269b633813fc60c"
ROOT = "eee19b7ec3c1b174"
CHILD = "eee19b7ec3c1b173"
START = 1_700_000_000_123_456_789
END = 1_700_000_000_987_654_321


def kv(key: str, **value: object) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def proto_request() -> ExportTraceServiceRequest:
    """Resource with service.name, two scopes, a parent and its child, every AnyValue kind."""
    attrs = [
        kv("s", string_value="héllo"),
        kv("b", bool_value=True),
        kv("i", int_value=-(2**62)),
        kv("d", double_value=2.5),
        kv("nan", double_value=float("nan")),
        kv("arr", array_value=ArrayValue(values=[AnyValue(string_value="x"), AnyValue(int_value=7)])),
        kv("kv", kvlist_value=KeyValueList(values=[kv("inner", bool_value=False),
                                                    kv("deep", array_value=ArrayValue(values=[AnyValue(double_value=1.0)]))])),
        kv("bytes", bytes_value=b"\x00\xffdata"),
        KeyValue(key="empty", value=AnyValue()),
    ]
    root = Span(trace_id=bytes.fromhex(TRACE), span_id=bytes.fromhex(ROOT), name="prisma:engine:query",
                kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=START, end_time_unix_nano=END,
                attributes=attrs, status=Status(code=Status.STATUS_CODE_OK))
    child = Span(trace_id=bytes.fromhex(TRACE), span_id=bytes.fromhex(CHILD), parent_span_id=bytes.fromhex(ROOT),
                 name="prisma:engine:db_query", kind=Span.SPAN_KIND_CLIENT,
                 start_time_unix_nano=START + 1000, end_time_unix_nano=END - 1000,
                 attributes=[kv("db.query.text", string_value="SELECT 1")],
                 status=Status(code=Status.STATUS_CODE_ERROR, message="boom"))
    resource = Resource(attributes=[kv("service.name", string_value="prisma-engine"), kv("host.name", string_value="h")])
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=resource, scope_spans=[
        ScopeSpans(scope=InstrumentationScope(name="prisma", version="7.2.0"), spans=[root]),
        ScopeSpans(scope=InstrumentationScope(name="prisma-db"), spans=[child]),
    ])])


EXPECTED_ROOT_ATTRS = {
    "s": "héllo", "b": True, "i": -(2**62), "d": 2.5, "nan": "NaN", "arr": ["x", 7],
    "kv": {"inner": False, "deep": [1.0]}, "bytes": base64.b64encode(b"\x00\xffdata").decode(), "empty": None,
}


def check_spans(spans: list[ReceivedSpan]) -> None:
    assert [s.name for s in spans] == ["prisma:engine:query", "prisma:engine:db_query"]
    root, child = spans
    assert root == ReceivedSpan(trace_id=TRACE, span_id=ROOT, parent_span_id=None, name="prisma:engine:query",
                                kind="server", start=START / 1e9, end=END / 1e9, attributes=EXPECTED_ROOT_ATTRS,
                                status="ok", service_name="prisma-engine", scope="prisma")
    assert (child.trace_id, child.span_id, child.parent_span_id) == (TRACE, CHILD, ROOT)
    assert (child.kind, child.status, child.scope, child.service_name) == ("client", "error", "prisma-db", "prisma-engine")
    assert child.attributes == {"db.query.text": "SELECT 1"}
    assert abs(child.start - (START + 1000) / 1e9) < 1e-6 and child.start < child.end


def to_otlp_json(msg: ExportTraceServiceRequest) -> dict:
    """The protobuf JSON mapping, then OTLP's exceptions: hex ids and integer enums."""
    doc = json_format.MessageToDict(msg, use_integers_for_enums=True)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return doc


def test_protobuf_round_trip():
    check_spans(decode_traces(proto_request().SerializeToString(), PB))


def test_protobuf_content_type_parameters_and_case():
    assert len(decode_traces(proto_request().SerializeToString(), "Application/X-Protobuf; charset=binary")) == 2


def test_json_from_message_classes():
    doc = to_otlp_json(proto_request())
    assert doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["startTimeUnixNano"] == str(START)  # int64 as string
    check_spans(decode_traces(json.dumps(doc).encode(), JS))


# Written by hand per the OTLP/JSON spec (opentelemetry-proto docs/specification.md#json-protobuf-encoding).
HAND_JSON = """
{
  "resourceSpans": [{
    "resource": {"attributes": [
      {"key": "service.name", "value": {"stringValue": "prisma-engine"}},
      {"key": "process.pid", "value": {"intValue": 4242}}
    ]},
    "scopeSpans": [
      {
        "scope": {"name": "prisma", "version": "7.2.0"},
        "spans": [{
          "traceId": "5B8EFFF798038103D269B633813FC60C",
          "spanId": "eee19b7ec3c1b174",
          "parentSpanId": "",
          "name": "prisma:engine:query",
          "kind": 2,
          "startTimeUnixNano": "1700000000123456789",
          "endTimeUnixNano": 1700000000987654321,
          "attributes": [
            {"key": "s", "value": {"stringValue": "h\\u00e9llo"}},
            {"key": "b", "value": {"boolValue": true}},
            {"key": "i", "value": {"intValue": "-4611686018427387904"}},
            {"key": "d", "value": {"doubleValue": 2.5}},
            {"key": "nan", "value": {"doubleValue": "NaN"}},
            {"key": "arr", "value": {"arrayValue": {"values": [{"stringValue": "x"}, {"intValue": "7"}]}}},
            {"key": "kv", "value": {"kvlistValue": {"values": [
              {"key": "inner", "value": {"boolValue": false}},
              {"key": "deep", "value": {"arrayValue": {"values": [{"doubleValue": 1}]}}}
            ]}}},
            {"key": "bytes", "value": {"bytesValue": "AP9kYXRh"}},
            {"key": "empty", "value": {}}
          ],
          "droppedAttributesCount": 0,
          "events": [{"timeUnixNano": "1700000000200000000", "name": "ev"}],
          "status": {"code": 1},
          "someFutureField": {"ignored": true}
        }]
      },
      {
        "scope": {"name": "prisma-db"},
        "spans": [{
          "traceId": "5b8efff798038103d269b633813fc60c",
          "spanId": "eee19b7ec3c1b173",
          "parentSpanId": "eee19b7ec3c1b174",
          "name": "prisma:engine:db_query",
          "kind": 3,
          "startTimeUnixNano": "1700000000123457789",
          "endTimeUnixNano": "1700000000987653321",
          "attributes": [{"key": "db.query.text", "value": {"stringValue": "SELECT 1"}}],
          "links": [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}],
          "status": {"code": 2, "message": "boom"}
        }]
      }
    ]
  }]
}
"""


def test_json_written_per_spec():
    check_spans(decode_traces(HAND_JSON.encode(), "application/json; charset=utf-8"))


def test_json_and_protobuf_agree():
    pb = decode_traces(proto_request().SerializeToString(), PB)
    assert decode_traces(HAND_JSON.encode(), JS) == pb
    assert decode_traces(json.dumps(to_otlp_json(proto_request())).encode(), JS) == pb


@pytest.mark.parametrize("fmt", ["protobuf", "json"])
def test_gzip_and_deflate(fmt):
    body = proto_request().SerializeToString() if fmt == "protobuf" else HAND_JSON.encode()
    ctype = PB if fmt == "protobuf" else JS
    check_spans(decode_traces(gzip.compress(body), ctype, "gzip"))
    check_spans(decode_traces(gzip.compress(body), ctype, " GZIP "))
    check_spans(decode_traces(zlib.compress(body), ctype, "deflate"))
    check_spans(decode_traces(body, ctype, "identity"))
    # two gzip members back to back are one gzip body (RFC 1952)
    half = len(body) // 2
    check_spans(decode_traces(gzip.compress(body[:half]) + gzip.compress(body[half:]), ctype, "gzip"))


def test_to_dict_from_dict_is_json_round_trip():
    spans = decode_traces(proto_request().SerializeToString(), PB)
    for s in spans:
        d = s.to_dict()
        assert list(d) == ["trace_id", "span_id", "parent_span_id", "name", "kind", "start", "end",
                           "attributes", "status", "service_name", "scope"]
        again = ReceivedSpan.from_dict(json.loads(json.dumps(d, allow_nan=False)))
        assert again == s


def test_invalid_ids_are_left_out_not_fatal():
    req = proto_request()
    spans = req.resource_spans[0].scope_spans[0].spans
    spans.add(trace_id=b"\0" * 16, span_id=b"\1" * 8, name="zero trace")
    spans.add(trace_id=b"\1" * 8, span_id=b"\1" * 8, name="short trace")
    spans.add(trace_id=b"\1" * 16, span_id=b"", name="no span id")
    names = [s.name for s in decode_traces(req.SerializeToString(), PB)]
    assert names == ["prisma:engine:query", "prisma:engine:db_query"]


def test_empty_request_object_has_no_spans():
    assert decode_traces(b"{}", JS) == []
    assert decode_traces(b'{"resourceSpans": []}', JS) == []


def reason_of(body: bytes, ctype: str, encoding: str | None = None) -> tuple[str, int]:
    with pytest.raises(OtlpDecodeError) as info:
        decode_traces(body, ctype, encoding)
    assert info.value.reason in OtlpDecodeError.REASONS
    return info.value.reason, info.value.status


@pytest.mark.parametrize("ctype", ["text/plain", "application/grpc", "", "application/jsonx", "multipart/form-data"])
def test_wrong_media_type(ctype):
    assert reason_of(proto_request().SerializeToString(), ctype) == ("unsupported_media_type", 415)


@pytest.mark.parametrize(("body", "ctype"), [
    (b"", PB), (b"", JS), (b"   ", JS),
    (b"\xff\xff\xff\xff", PB), (b"garbage!!", PB), (b"\x0a\xff\xff\xff\xff\x0f", PB),
    (b"{not json", JS), (b"[1, 2]", JS), (b'"x"', JS), (b"\xff\xfe{}", JS),
    (b'{"resourceSpans": 5}', JS), (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', JS),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "abc"}]}]}]}', JS),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": {"x": 1}}]}]}]}', JS),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}', JS),
    (b"[" * 100_000, JS),
])
def test_undecodable(body, ctype):
    assert reason_of(body, ctype) == ("undecodable", 400)


def test_undecodable_after_gzip():
    assert reason_of(gzip.compress(b"{nope"), JS, "gzip") == ("undecodable", 400)
    assert reason_of(gzip.compress(b""), PB, "gzip") == ("undecodable", 400)


def test_bad_encoding():
    body = proto_request().SerializeToString()
    assert reason_of(body, PB, "br") == ("bad_encoding", 415)
    assert reason_of(body, PB, "gzip, deflate") == ("bad_encoding", 415)
    assert reason_of(body, PB, "gzip") == ("bad_encoding", 400)  # labelled gzip, is not
    assert reason_of(gzip.compress(body)[:-12], PB, "gzip") == ("bad_encoding", 400)  # truncated
    assert reason_of(b"", PB, "gzip") == ("bad_encoding", 400)
    corrupt = bytearray(gzip.compress(body))
    corrupt[20] ^= 0xFF
    assert reason_of(bytes(corrupt), PB, "gzip") == ("bad_encoding", 400)
    assert reason_of(gzip.compress(body) + b"trailing junk", PB, "gzip") == ("bad_encoding", 400)


def test_decompression_bomb_is_bounded():
    bomb = gzip.compress(b"\x0a" + b"\0" * (20 * 1024 * 1024))
    assert len(bomb) < 100_000
    with pytest.raises(OtlpDecodeError) as info:
        decode_traces(bomb, PB, "gzip", max_decoded_bytes=1024 * 1024)
    assert (info.value.reason, info.value.status) == ("bad_encoding", 413)


def test_never_anything_but_otlp_decode_error():
    """Fuzz-ish: mutations of valid bodies raise OtlpDecodeError or decode, nothing else."""
    import random

    rnd = random.Random(7)
    bases = [(proto_request().SerializeToString(), PB, None), (HAND_JSON.encode(), JS, None),
             (gzip.compress(proto_request().SerializeToString()), PB, "gzip")]
    for _ in range(1500):
        body, ctype, enc = rnd.choice(bases)
        b = bytearray(body)
        for _ in range(rnd.randint(1, 6)):
            op = rnd.random()
            pos = rnd.randrange(len(b)) if b else 0
            if op < 0.5 and b:
                b[pos] = rnd.randrange(256)
            elif op < 0.75:
                del b[pos:pos + rnd.randint(1, 30)]
            else:
                b[pos:pos] = rnd.randbytes(rnd.randint(1, 10))
        try:
            spans = decode_traces(bytes(b), ctype, enc)
        except OtlpDecodeError as exc:
            assert exc.reason in OtlpDecodeError.REASONS
        else:
            for s in spans:
                json.dumps(s.to_dict(), allow_nan=False)
                assert len(s.trace_id) == 32 and len(s.span_id) == 16


def test_traces_url_follows_the_base_url_rule():
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/otlp") == "http://c:4318/otlp/v1/traces"
    assert traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
