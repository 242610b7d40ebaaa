"""HTTP digest authentication as SIP uses it (RFC 2617, RFC 7616 algorithms, RFC 3261 section 22).

Why one module: the phones, the harness's probes, the test caller and the PBX's credential table must
compute the same hashes; a second copy is where a quoting or ``nc`` mistake hides until a real PBX answers
403. Only ``qop=auth`` (or none) is answered; ``auth-int`` alone makes a challenge unusable.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda b: hashlib.md5(b).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
    "SHA-512-256": lambda b: hashlib.new("sha512_256", b).hexdigest(),
}
# algorithm name as the server wrote it -> (hash, is a -sess variant); a phone answers thousands of
# challenges a second in a registration storm, so the name is looked at once.
_ALGORITHMS: dict[str, tuple[Callable[[bytes], str], bool]] = {}
_CHAL_RE = re.compile(r'([A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)')
_getrandbits = random.getrandbits


def _algorithm(name: str) -> tuple[Callable[[bytes], str], bool]:
    """(hash, session variant) of an algorithm name (``MD5``, ``SHA-256-sess``, ...); KeyError if unknown."""
    got = _ALGORITHMS.get(name)
    if got is None:
        base = name.upper()
        sess = base.endswith("-SESS")
        got = _ALGORITHMS[name] = (_HASHES[base[:-5] if sess else base], sess)
    return got


@dataclass(slots=True)
class Challenge:
    """A parsed WWW-/Proxy-Authenticate Digest challenge."""

    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: str = "MD5"
    qop: str | None = None  # "auth" when the server offers it (we never do auth-int)
    stale: bool = False


def parse_challenge(value: str) -> Challenge | None:
    """Parse ``Digest realm="..", nonce="..", qop="auth", ..``; None unless it is a Digest we can answer."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    fields = {}
    for key, val in _CHAL_RE.findall(rest):
        if val.startswith('"'):
            val = val[1:-1].replace('\\"', '"')
        fields[key.lower()] = val
    if "nonce" not in fields:
        return None
    algorithm = fields.get("algorithm", "MD5")
    try:
        _algorithm(algorithm)
    except KeyError:
        return None
    qops = [q.strip().lower() for q in fields.get("qop", "").split(",") if q.strip()]
    if qops and "auth" not in qops:
        return None
    return Challenge(
        realm=fields.get("realm", ""),
        nonce=fields["nonce"],
        opaque=fields.get("opaque"),
        algorithm=algorithm,
        qop="auth" if qops else None,
        stale=fields.get("stale", "").lower() == "true",
    )


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password): what a registrar stores instead of the password (not ``-sess``'d)."""
    return _algorithm(algorithm)[0](f"{username}:{realm}:{password}".encode())


def response(
    ha1_hex: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str,
    cnonce: str,
    algorithm: str = "MD5",
) -> str:
    """The ``response`` value: H(HA1:nonce:nc:cnonce:qop:HA2), or H(HA1:nonce:HA2) without qop.

    ``ha1_hex`` is :func:`ha1`'s value; for a ``-sess`` algorithm it is turned into the session key here.
    """
    return _response(*_algorithm(algorithm), ha1_hex, method, uri, nonce, qop, nc, cnonce)


def _response(
    h: Callable[[bytes], str],
    sess: bool,
    ha1_hex: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str,
    cnonce: str,
) -> str:
    if sess:
        ha1_hex = h(f"{ha1_hex}:{nonce}:{cnonce}".encode())
    ha2 = h(f"{method}:{uri}".encode())
    if qop:
        return h(f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())
    return h(f"{ha1_hex}:{nonce}:{ha2}".encode())


def authorization(
    chal: Challenge,
    method: str,
    uri: str,
    username: str,
    password: str | None = None,
    *,
    ha1_hex: str | None = None,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization / Proxy-Authorization value answering ``chal``.

    Give the ``password``, or its :func:`ha1` (a phone caches it per realm). ``nc`` counts the requests
    answered with this nonce (RFC 2617 section 3.2.2).
    """
    alg = chal.algorithm
    h, sess = _algorithm(alg)
    if ha1_hex is None:
        if password is None:
            raise ValueError("authorization needs the password or its HA1")
        ha1_hex = h(f"{username}:{chal.realm}:{password}".encode())
    head = f'Digest username="{username}", realm="{chal.realm}", nonce="{chal.nonce}", uri="{uri}", '
    qop = chal.qop
    if qop or sess:
        cnonce = cnonce or f"{_getrandbits(64):x}"
    if qop:
        ncs = f"{nc:08x}"
        resp = _response(h, sess, ha1_hex, method, uri, chal.nonce, qop, ncs, cnonce or "")
        value = f'{head}response="{resp}", algorithm={alg}, cnonce="{cnonce}", qop={qop}, nc={ncs}'
    else:
        resp = _response(h, sess, ha1_hex, method, uri, chal.nonce, None, "", cnonce or "")
        value = f'{head}response="{resp}", algorithm={alg}'
        if sess:
            value += f', cnonce="{cnonce}"'
    if chal.opaque is not None:
        value += f', opaque="{chal.opaque}"'
    return value
