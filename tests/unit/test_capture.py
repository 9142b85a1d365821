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
