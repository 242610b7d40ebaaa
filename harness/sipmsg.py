"""Just enough SIP parsing to judge a capture: start line, Call-ID, CSeq, From/To, Contact, Expires.

Why not a maintained parser: the decoder must keep up with 100,000 packets per second in one thread, and the
candidates do not fit. pyVoIP's ``SIPMessage`` (maintained, and already a dependency of the stack) rejects
REGISTER and OPTIONS requests outright (only INVITE/ACK/BYE/CANCEL are "compatible"), so it cannot read a
registration at all; on the messages it does accept (INVITE/180/200/BYE) ``bench/bench_capture.py``
measured 52,000-70,000 messages per second on this machine, against 230,000-290,000 for ``parse_sip``,
which alone would hold the decoder well under the target. dpkt's ``sip`` module has had no release since
2022, and sip-core on PyPI is a 0.0.1 placeholder. So this module works on bytes: the start line, then
one regular-expression pass in C over the header block for the few headers a verdict needs (compact
forms too, RFC 3261 section 7.3.3: i, f, t, m, l, v), never the body, with small caches for the values
SIP repeats (request lines, CSeq, Contact, From/To URIs).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

#: Request methods we recognise when sniffing a payload of unknown port (RFC 3261, 3262, 3265, 3311, 3428,
#: 3515, 3903, 6086).
METHODS: tuple[bytes, ...] = (
    b"REGISTER ",
    b"INVITE ",
    b"ACK ",
    b"BYE ",
    b"CANCEL ",
    b"OPTIONS ",
    b"PRACK ",
    b"SUBSCRIBE ",
    b"NOTIFY ",
    b"PUBLISH ",
    b"INFO ",
    b"REFER ",
    b"MESSAGE ",
    b"UPDATE ",
)
#: Prefixes that make a payload look like a SIP message (request or response start line).
SIP_PREFIXES: tuple[bytes, ...] = (b"SIP/2.0 ", *METHODS)

# One pass in C over the header block finds the few headers we need, instead of a Python loop over every
# line (three times faster on kamailio-style messages). Names are matched case-insensitively, compact forms
# too; whitespace around the colon is allowed (RFC 3261 section 7.3.1).
_HEADER_RE = re.compile(
    rb"\r\n(call-id|i|cseq|from|f|to|t|contact|m|expires|content-length|l)[ \t]*:[ \t]*([^\r]*)", re.I
)
_FOLD_RE = re.compile(rb"\r\n[ \t]+")
_CALL_ID, _CSEQ, _FROM, _TO, _CONTACT, _EXPIRES, _CLEN = range(7)
_SLOTS: dict[bytes, int] = {}
for _names, _slot in (
    ((b"call-id", b"i"), _CALL_ID),
    ((b"cseq",), _CSEQ),
    ((b"from", b"f"), _FROM),
    ((b"to", b"t"), _TO),
    ((b"contact", b"m"), _CONTACT),
    ((b"expires",), _EXPIRES),
    ((b"content-length", b"l"), _CLEN),
):
    for _n in _names:
        _SLOTS[_n] = _slot
        _SLOTS[_n.upper()] = _slot
        _SLOTS[_n.title()] = _slot  # Call-Id, Content-Length, Cseq, From...
_SLOTS[b"Call-ID"] = _CALL_ID
_SLOTS[b"CSeq"] = _CSEQ

# Request line: method, Request-URI (anchored at the start; the caller bounds it to the first line).
_REQUEST_RE = re.compile(rb"([A-Za-z]+) ([^ \r\n]+) SIP/2\.0$")
# Request-URI: user (if any) and host of a sip:/sips: URI.
_RURI_RE = re.compile(rb"[A-Za-z]+:(?:([^@;:?>]*)[^@?>]*@)?(\[[^\]]*\]|[^:;?>]*)")
# User of the URI in a name-addr ("Name" <sip:u@h>;tag=x) or addr-spec (sip:u@h;tag=x): None if no user.
_ADDR_USER_RE = re.compile(rb'\s*(?:(?:"(?:[^"\\]|\\.)*"\s*|[^<"]*)<)?\s*[A-Za-z]+:([^@;:?>]*)[^@>]*@')
_METHOD_NAMES = {m.strip(): m.strip().decode() for m in METHODS}
# Bounded caches of decoded header values. SIP repeats itself (the same request line to the registrar, the
# same Contact and From of a phone in every refresh, CSeq in request and response): a dict lookup is ~20
# times cheaper than parsing again.
_USER_CACHE: dict[bytes, str | None] = {}
_START_CACHE: dict[bytes, tuple[Any, ...]] = {}
_CSEQ_CACHE: dict[bytes, tuple[int | None, str | None]] = {}
_CONTACT_CACHE: dict[bytes, tuple[str | None, int | None]] = {}
_CACHE_MAX = 1 << 16
_MISSING = object()


class SipHead(NamedTuple):
    """The parts of one SIP message that a checker needs; strings are decoded, absent parts are None."""

    method: str | None  # request method, None for a response
    status: int | None  # response status code, None for a request
    reason: str | None  # response reason phrase
    request_uri: str | None
    ruri_user: str | None  # user part of the Request-URI
    ruri_host: str | None  # host of the Request-URI, without port
    call_id: str | None
    cseq: int | None
    cseq_method: str | None
    from_user: str | None
    to_user: str | None
    contact: str | None  # URI of the first Contact (or "*")
    expires: int | None  # first Contact's expires parameter, else the Expires header
    content_length: int | None
    header_length: int  # bytes up to and including the blank line (or the whole input if none)


def looks_like_sip(data: bytes) -> bool:
    """Tell whether a payload starts like a SIP request or response, for traffic on unexpected ports."""
    return data.startswith(SIP_PREFIXES)


def _addr_uri(value: bytes) -> bytes:
    """The URI of a name-addr / addr-spec header value (From, To, Contact), without header parameters."""
    lt = value.find(b"<")
    if lt >= 0:
        gt = value.find(b">", lt)
        return value[lt + 1 : gt] if gt > 0 else value[lt + 1 :]
    # addr-spec: everything after the first ';' is a header parameter (RFC 3261 section 20.10).
    semi = value.find(b";")
    return (value[:semi] if semi >= 0 else value).strip()


def _user(uri: bytes) -> str | None:
    """User part of a sip:/sips:/tel: URI in bytes ("sip:1001@pbx;x=y" -> "1001")."""
    colon = uri.find(b":")
    if colon < 0:
        return None
    at = uri.find(b"@", colon)
    if at < 0:
        if uri[:colon].lower() != b"tel":
            return None
        user = uri[colon + 1 :]
    else:
        user = uri[colon + 1 : at]
    # drop a password (user:pw@) or user parameters (user;phone-context=...@, tel:+1234;ext=5)
    for sep in b":;?":
        cut = user.find(sep)
        if cut >= 0:
            user = user[:cut]
    return user.decode("utf-8", "replace") if user else None


def _host(uri: bytes) -> str | None:
    """Host of a sip:/sips: URI in bytes, without user, port or parameters."""
    colon = uri.find(b":")
    if colon < 0:
        return None
    rest = uri[colon + 1 :]
    for sep in b";?":
        cut = rest.find(sep)
        if cut >= 0:
            rest = rest[:cut]
    at = rest.rfind(b"@")
    if at >= 0:
        rest = rest[at + 1 :]
    if rest.startswith(b"["):
        end = rest.find(b"]")
        rest = rest[1:end] if end > 0 else rest[1:]
    else:
        cut = rest.find(b":")
        if cut >= 0:
            rest = rest[:cut]
    return rest.decode("utf-8", "replace") if rest else None


def uri_user(uri: str | None) -> str | None:
    """User part of a sip:/sips:/tel: URI ("sip:1001@pbx;x=y" -> "1001"), None when the URI has none."""
    return _user(uri.encode()) if uri else None


def uri_host(uri: str | None) -> str | None:
    """Host part of a sip:/sips: URI without port or parameters ("sip:u@[::1]:5060;t=u" -> "::1")."""
    return _host(uri.encode()) if uri else None


def _expires_param(contact: bytes) -> int | None:
    """The expires parameter of one Contact value, if any."""
    gt = contact.find(b">")
    params = contact[gt + 1 :] if gt >= 0 else contact
    at = params.lower().find(b"expires=")
    if at < 0:
        return None
    val = params[at + 8 :]
    end = 0
    while end < len(val) and 48 <= val[end] <= 57:
        end += 1
    return int(val[:end]) if end else None


def _first_contact(value: bytes) -> bytes:
    """The first of several comma-separated Contact values (commas inside <...> or quotes do not split)."""
    depth = 0
    quoted = False
    for i, ch in enumerate(value):
        if ch == 34:  # "
            quoted = not quoted
        elif quoted:
            continue
        elif ch == 60:  # <
            depth += 1
        elif ch == 62:  # >
            depth -= 1
        elif ch == 44 and depth == 0:  # ,
            return value[:i]
    return value


def parse_sip(data: bytes) -> SipHead | None:
    """Parse the start line and needed headers of one SIP message; None if it is not a SIP message.

    ``data`` may hold the body and trailing bytes; only the header block is read. Of repeated headers the
    first counts. Folded header lines (obsolete line continuation) are unfolded first.
    """
    t = parse_sip_tuple(data)
    return None if t is None else tuple.__new__(SipHead, t)  # type: ignore[type-var,return-value]


def _name_addr_user(value: bytes) -> str | None:
    """User of the URI in a From/To value, cached by the part before '>' (tags change, users repeat)."""
    key = value if value.startswith(b'"') else value.partition(b">")[0]  # a quoted name may hold '>'
    user = _USER_CACHE.get(key, _MISSING)
    if user is _MISSING:
        m = _ADDR_USER_RE.match(key)
        if m is not None:
            user = m.group(1).decode("utf-8", "replace") or None
        elif b"tel:" in key or b"TEL:" in key:
            user = _user(_addr_uri(value))
        else:
            user = None
        if len(_USER_CACHE) >= _CACHE_MAX:
            _USER_CACHE.clear()
        _USER_CACHE[key] = user
    return user  # type: ignore[return-value]


def _start_line(start: bytes) -> tuple[Any, ...] | None:
    """(method, status, reason, request_uri, ruri_user, ruri_host) of a start line; None if not SIP."""
    if start.startswith(b"SIP/2.0 "):
        code = start[8:11]
        if not code.isdigit() or start[11:12] not in (b" ", b""):
            return None
        return None, int(code), start[12:].decode("utf-8", "replace"), None, None, None
    m = _REQUEST_RE.match(start)
    if m is None:
        return None
    method_b, ruri = m.groups()
    u = _RURI_RE.match(ruri)
    if u is not None and not ruri[:4].lower() == b"tel:":
        user_b, host_b = u.groups()
        ruri_user = user_b.decode("utf-8", "replace") if user_b else None
        ruri_host = host_b.strip(b"[]").decode("utf-8", "replace") or None
    else:
        ruri_user, ruri_host = _user(ruri), _host(ruri)
    return method_b.decode(), None, None, ruri.decode("utf-8", "replace"), ruri_user, ruri_host


def _cseq(value: bytes) -> tuple[int | None, str | None]:
    parts = value.split()
    num = int(parts[0]) if parts and parts[0].isdigit() else None
    return num, parts[1].decode("utf-8", "replace") if len(parts) > 1 else None


def _contact(value: bytes) -> tuple[str | None, int | None]:
    """(URI, expires parameter) of the first Contact in a Contact header value."""
    first = (_first_contact(value) if b"," in value else value).strip()
    if first == b"*":
        return "*", None
    return _addr_uri(first).decode("utf-8", "replace"), _expires_param(first)


def parse_sip_tuple(data: bytes) -> tuple[Any, ...] | None:
    """``parse_sip`` as a plain tuple in SipHead's field order: the decoder's hot path skips the wrapper."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        data += b"\r\n"
        end = header_length = len(data) - 2
    else:
        header_length = end + 4
    end += 2  # keep the CRLF of the last header line
    eol = data.find(b"\r\n", 0, end)
    start = data[:eol]
    first = _START_CACHE.get(start)
    if first is None:
        first = _start_line(start)
        if first is None:
            return None
        if len(_START_CACHE) >= _CACHE_MAX:
            _START_CACHE.clear()
        _START_CACHE[start] = first
    method, status, reason, request_uri, ruri_user, ruri_host = first
    if data.find(b"\r\n ", eol, end) >= 0 or data.find(b"\r\n\t", eol, end) >= 0:
        data = data[:eol] + _FOLD_RE.sub(b" ", data[eol : end - 2]) + b"\r\n"
        eol, end = data.find(b"\r\n"), len(data)

    vals: list[bytes | None] = [None, None, None, None, None, None, None]
    slots = _SLOTS
    for name, value in _HEADER_RE.findall(data, eol, end):
        slot = slots.get(name)
        if slot is None:
            slot = slots[name.lower()]
        if vals[slot] is None:  # the first occurrence counts
            vals[slot] = value
    call_id, cseq_b, from_b, to_b, contact_b, expires_b, clen_b = vals

    cseq = cseq_method = None
    if cseq_b:
        cs = _CSEQ_CACHE.get(cseq_b)
        if cs is None:
            cs = _cseq(cseq_b)
            if len(_CSEQ_CACHE) >= _CACHE_MAX:
                _CSEQ_CACHE.clear()
            _CSEQ_CACHE[cseq_b] = cs
        cseq, cseq_method = cs
    contact = expires = None
    if contact_b:
        ct = _CONTACT_CACHE.get(contact_b)
        if ct is None:
            ct = _contact(contact_b)
            if len(_CONTACT_CACHE) >= _CACHE_MAX:
                _CONTACT_CACHE.clear()
            _CONTACT_CACHE[contact_b] = ct
        contact, expires = ct
    if expires is None and expires_b:
        expires_b = expires_b.strip()
        if expires_b.isdigit():
            expires = int(expires_b)
    content_length = None
    if clen_b:
        clen_b = clen_b.strip()
        if clen_b.isdigit():
            content_length = int(clen_b)
    return (
        method,
        status,
        reason,
        request_uri,
        ruri_user,
        ruri_host,
        call_id.rstrip().decode("utf-8", "replace") if call_id is not None else None,
        cseq,
        cseq_method,
        _name_addr_user(from_b) if from_b is not None else None,
        _name_addr_user(to_b) if to_b is not None else None,
        contact,
        expires,
        content_length,
        header_length,
    )
