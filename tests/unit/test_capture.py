import gzip
import time
import zlib

import brotli

from pdp_observe.capture import RawCapture, build_exchange, decode_content
from pdp_observe.redact import Redactor


def test_decode_gzip_br_deflate_and_truncated_gzip():
    payload = b'{"data":[' + b",".join(str(i * 7919 % 100003).encode() for i in range(5000)) + b"]}"
    assert decode_content(gzip.compress(payload), "gzip", 1 << 20) == (payload, None)
    assert decode_content(brotli.compress(payload), "br", 1 << 20) == (payload, None)
    assert decode_content(zlib.compress(payload), "deflate", 1 << 20) == (payload, None)
    partial, err = decode_content(gzip.compress(payload)[:200], "gzip", 1 << 20)
    assert err is None and payload.startswith(partial) and 0 < len(partial) < len(payload)


def test_decode_errors_keep_the_bytes_and_say_why():
    data, err = decode_content(b"not gzip at all", "gzip", 1 << 20)
    assert data == b"not gzip at all" and "gzip decode failed" in err
    data, err = decode_content(b"x", "zstd-unknown", 1 << 20)
    assert data == b"x" and "unsupported" in err


def test_decode_output_is_capped():
    bomb = gzip.compress(b"\0" * (50 << 20))
    data, _ = decode_content(bomb, "gzip", 1 << 20)
    assert len(data) == 1 << 20


def test_build_exchange_timings_and_hash():
    t0 = time.perf_counter()
    cap = RawCapture(1000.0, t0, "POST", "/query?api_key=abc", "1.1", "127.0.0.1", "http://u", [(b"Authorization", b"Bearer s3")])
    cap.req_body, cap.req_size = b"{}", 2
    cap.t_connected, cap.t_first_byte, cap.t_done = t0 + 0.001, t0 + 0.002, t0 + 0.005
    cap.status, cap.reason, cap.resp_headers, cap.resp_body, cap.resp_size = 200, "OK", [], b"ok", 2
    ex = build_exchange(cap, Redactor(), 1 << 20)
    assert abs(ex.timings.duration_ms - 5.0) < 1e-6 and abs(ex.timings.ttfb_ms - 2.0) < 1e-6
    assert ex.request.body.sha256 == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    assert "abc" not in ex.request.path and "s3" not in str(ex.request.headers)


def test_body_tee_hashes_only_what_it_cannot_keep():
    import hashlib

    from pdp_observe.capture import BodyTee

    small = BodyTee(10)
    for c in (b"abc", b"def"):
        small.feed(c)
    assert small.result() == (b"abcdef", 6, None, False)  # the worker hashes the whole kept body
    big = BodyTee(4)
    for c in (b"ab", b"cdef", b"gh"):
        big.feed(c)
    assert big.result() == (b"abcd", 8, hashlib.sha256(b"abcdefgh").hexdigest(), True)


def test_ids_are_unique_time_ordered_and_their_tail_tells_them_apart(monkeypatch):
    import pdp_observe.exchange as exchange_mod
    from pdp_observe.exchange import new_id, short_id

    ids = [new_id() for _ in range(50_000)]  # many share a millisecond
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids[:100])
    assert abs((int(ids[0], 16) >> 20) / 1000 - time.time()) < 60  # the head is the wall clock in ms
    assert len({short_id(i) for i in ids}) == len(ids)  # what tables print stays distinct

    # the clock steps back (NTP): ids keep growing instead of repeating stored ones
    last = ids[-1]
    monkeypatch.setattr(exchange_mod.time, "time_ns", lambda: 1_000_000_000_000)
    assert new_id() > last and new_id() > last
