from pdp_observe.proxy import rewrite_itx_endpoint, same_origin

BODY = (b'{"id":"y1m","data-proxy":{"endpoint":"http://localhost:45620/6.19.0/4802/itx/y1m"}}')


def test_endpoint_naming_the_upstream_is_pointed_at_the_sidecar():
    out = rewrite_itx_endpoint(BODY, "http://127.0.0.1:45620", "http://127.0.0.1:4466")
    assert out == b'{"id":"y1m","data-proxy":{"endpoint":"http://127.0.0.1:4466/6.19.0/4802/itx/y1m"}}'


def test_other_hosts_and_already_right_endpoints_are_left_alone():
    assert rewrite_itx_endpoint(BODY, "http://10.0.0.5:45620", "http://127.0.0.1:4466") is None
    assert rewrite_itx_endpoint(BODY, "http://127.0.0.1:45620", "http://localhost:45620") is None
    assert rewrite_itx_endpoint(b'{"id":"x"}', "http://127.0.0.1:1", "http://127.0.0.1:2") is None


def test_same_origin_treats_loopback_names_alike():
    assert same_origin("http://localhost:80", "http://127.0.0.1")
    assert not same_origin("http://localhost:80", "https://localhost:80")
