"""Unit tests of sipcore.digest against published vectors (RFC 2617 section 3.5, RFC 7616 section 3.9.1).

Why: phones, the harness's client, the test caller and the PBX's credential table all hash through this
module; a wrong quote or ``nc`` only shows up as 403 from a real PBX, here each piece has a known answer.
"""

from __future__ import annotations

import pytest

from sipcore.digest import Challenge, authorization, ha1, parse_challenge, response


def test_rfc2617_vector() -> None:
    key = ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    got = response(
        key, "GET", "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "auth", "00000001", "0a4f113b"
    )
    assert got == "6629fae49393a05397450978507c4ef1"
    chal = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert chal is not None
    hdr = authorization(chal, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", nc=1, cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in hdr
    assert "nc=00000001" in hdr and "qop=auth" in hdr and 'opaque="5ccc069c' in hdr


def test_rfc7616_sha256_vector() -> None:
    chal = parse_challenge(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    assert chal is not None and chal.algorithm == "SHA-256" and chal.qop == "auth"
    hdr = authorization(
        chal,
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        nc=1,
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert 'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"' in hdr
    assert "algorithm=SHA-256" in hdr


def test_challenge_parsing_and_authorization_header() -> None:
    chal = parse_challenge(
        'Digest realm="sha.lab", nonce="abc,def", qop="auth,auth-int", opaque="op", algorithm=MD5, stale=TRUE'
    )
    assert chal == Challenge("sha.lab", "abc,def", "op", "MD5", "auth", True)
    assert parse_challenge('Basic realm="x"') is None
    assert parse_challenge('Digest realm="x", nonce="n", algorithm=AKAv1-MD5') is None  # unknown algorithm
    assert parse_challenge('Digest realm="x", nonce="n", qop="auth-int"') is None  # nothing we answer
    assert parse_challenge('Digest realm="x"') is None  # no nonce
    sha = parse_challenge('Digest realm="x", nonce="n", algorithm=SHA-512-256-sess')
    assert sha is not None and sha.algorithm == "SHA-512-256-sess" and sha.qop is None
    key = ha1("19001", "sha.lab", "pw")
    hdr = authorization(chal, "REGISTER", "sip:127.0.0.1:5060", "19001", ha1_hex=key, nc=3, cnonce="c0ffee")
    want = response(key, "REGISTER", "sip:127.0.0.1:5060", "abc,def", "auth", "00000003", "c0ffee")
    assert f'response="{want}"' in hdr
    assert "qop=auth" in hdr and "nc=00000003" in hdr and 'cnonce="c0ffee"' in hdr and 'opaque="op"' in hdr
    assert hdr.startswith(
        'Digest username="19001", realm="sha.lab", nonce="abc,def", uri="sip:127.0.0.1:5060"'
    )
    assert hdr == authorization(chal, "REGISTER", "sip:127.0.0.1:5060", "19001", "pw", nc=3, cnonce="c0ffee")
    plain = Challenge("r", "n")
    hdr2 = authorization(plain, "INVITE", "sip:x@y", "u", ha1_hex=ha1("u", "r", "p"))
    assert "qop" not in hdr2 and "nc=" not in hdr2 and "cnonce" not in hdr2
    sess = authorization(
        Challenge("r", "n", algorithm="MD5-sess"), "INVITE", "sip:x@y", "u", "p", cnonce="cc"
    )
    want_sess = response(ha1("u", "r", "p"), "INVITE", "sip:x@y", "n", None, "", "cc", "MD5-sess")
    assert f'response="{want_sess}"' in sess and 'cnonce="cc"' in sess
    with pytest.raises(ValueError):
        authorization(plain, "INVITE", "sip:x@y", "u")
