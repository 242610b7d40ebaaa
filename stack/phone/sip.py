"""LEGACY, to be deleted: the phone's former SIP parser, kept only for stack/cti/pbxevents.py.

The phone, the harness and the virtual lab use :mod:`sipcore` (one message model, one digest). This copy
stays until stack/cti/pbxevents.py imports ``sipcore.message`` instead (its owner's edit: ``msg.get(x)``
-> ``msg.header(x)``, ``msg.cseq[0]`` -> ``msg.cseq``); nothing else may import it.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "e": "content-encoding",
    "s": "subject",
    "o": "event",
    "r": "refer-to",
    "u": "allow-events",
    "x": "session-expires",
}
# Headers whose comma-joined values are separate entries (never quoted commas in practice).
SPLIT = frozenset(("via", "route", "record-route"))

_CHAL_RE = re.compile(r'([A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)')
_getrandbits = random.getrandbits


def token(bits: int = 64) -> str:
    """A random hex token for tags, branches and Call-IDs (uniqueness, not secrecy)."""
    return f"{_getrandbits(bits):x}"


def new_branch() -> str:
    """An RFC 3261 branch (magic cookie + random)."""
    return f"z9hG4bK{_getrandbits(64):x}"


class SipMessage:
    """A parsed request or response; ``headers`` maps a lower-case name to its values in order."""

    __slots__ = ("method", "uri", "status", "reason", "headers", "body")

    def __init__(
        self,
        method: str | None,
        uri: str | None,
        status: int,
        reason: str,
        headers: dict[str, list[str]],
        body: bytes,
    ) -> None:
        self.method = method
        self.uri = uri
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (lower case), or ``default``."""
        vals = self.headers.get(name)
        return vals[0] if vals else default

    def all(self, name: str) -> list[str]:
        """Every value of header ``name`` (lower case), in order."""
        return self.headers.get(name) or []

    @property
    def call_id(self) -> str:
        return self.get("call-id", "") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method) of the CSeq header; (0, "") if missing or bad."""
        num, _, meth = (self.get("cseq", "") or "").partition(" ")
        try:
            return int(num), meth.strip()
        except ValueError:
            return 0, ""

    @property
    def branch(self) -> str:
        """The branch of the top Via."""
        via = self.get("via")
        return param(via, "branch") or "" if via else ""

    def __repr__(self) -> str:
        first = f"{self.method} {self.uri}" if self.method else f"{self.status} {self.reason}"
        return f"<SipMessage {first} call-id={self.call_id!r}>"


def _split_commas(value: str) -> list[str]:
    """Split a comma-joined header value, keeping commas inside <...> and quotes."""
    if "," not in value:
        return [value]
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(value[start:i].strip())
            start = i + 1
    out.append(value[start:].strip())
    return [v for v in out if v]


def parse(data: bytes) -> SipMessage | None:
    """Parse one datagram; None if it is not a SIP message (keep-alive CRLFs, garbage)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
        if not sep:
            return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    first = lines[0].strip()
    if not first:
        return None
    if first.startswith("SIP/2.0 "):
        try:
            status = int(first[8:11])
        except ValueError:
            return None
        method = uri = None
        reason = first[12:]
    else:
        parts = first.split(" ")
        if len(parts) != 3 or not parts[2].startswith("SIP/"):
            return None
        method, uri = parts[0], parts[1]
        status, reason = 0, ""
    headers: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":  # folded continuation line
            if last:
                last[-1] = f"{last[-1]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        name = name.strip().lower()
        if len(name) == 1:
            name = COMPACT.get(name, name)
        value = value.strip()
        vals = _split_commas(value) if name in SPLIT else [value]
        last = headers.get(name)
        if last is None:
            last = headers[name] = vals
        else:
            last.extend(vals)
    clen = headers.get("content-length")
    if clen:
        try:
            body = body[: int(clen[0])]
        except ValueError:
            pass
    return SipMessage(method, uri, status, reason, headers, body)


def param(value: str, name: str) -> str | None:
    """A ``;name=value`` parameter of a header value (after any <uri>); "" for a flag parameter."""
    gt = value.rfind(">")
    rest = value[gt + 1 :] if gt >= 0 else value
    for part in rest.split(";")[1:]:
        key, eq, val = part.partition("=")
        if key.strip().lower() == name:
            return val.strip() if eq else ""
    return None


def tag_of(value: str | None) -> str | None:
    """The tag parameter of a From/To value."""
    return param(value, "tag") if value else None


def uri_of(value: str) -> str:
    """The URI of a name-addr (``"x" <sip:a@b>;p``) or addr-spec (``sip:a@b;p``) header value."""
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        return value[lt + 1 : gt if gt > 0 else None]
    return value.split(";", 1)[0].strip()


def user_of(uri: str) -> str:
    """The user part of a SIP URI ("" if none)."""
    scheme_end = uri.find(":")
    rest = uri[scheme_end + 1 :] if scheme_end >= 0 else uri
    at = rest.find("@")
    if at < 0:
        return ""
    return rest[:at].split(";", 1)[0].split(":", 1)[0]


def hostport_of(uri: str, default_port: int = 5060) -> tuple[str, int]:
    """(host, port) of a SIP URI; IPv6 hosts without brackets."""
    scheme_end = uri.find(":")
    rest = uri[scheme_end + 1 :] if scheme_end >= 0 else uri
    rest = rest.split("@", 1)[-1]
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    if rest.startswith("["):
        end = rest.find("]")
        host = rest[1:end]
        port_s = rest[end + 2 :] if rest[end + 1 : end + 2] == ":" else ""
    else:
        host, _, port_s = rest.partition(":")
    try:
        port = int(port_s) if port_s else default_port
    except ValueError:
        port = default_port
    return host, port


def format_host(host: str) -> str:
    """A host as written in SIP URIs and Via (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# ---------------------------------------------------------------- digest (RFC 2617 / RFC 3261 22)


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
    """Parse ``Digest realm="..", nonce="..", qop="auth", ..``; None if not a usable MD5 digest."""
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
    if algorithm.upper() != "MD5":
        return None
    qops = [q.strip() for q in fields.get("qop", "").split(",") if q.strip()]
    return Challenge(
        realm=fields.get("realm", ""),
        nonce=fields["nonce"],
        opaque=fields.get("opaque"),
        algorithm=algorithm,
        qop="auth" if "auth" in qops else None,
        stale=fields.get("stale", "").lower() == "true",
    )


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def ha1_of(username: str, realm: str, password: str) -> str:
    """HA1 = MD5(username:realm:password)."""
    return md5_hex(f"{username}:{realm}:{password}")


def digest_response(
    ha1: str, method: str, uri: str, nonce: str, qop: str | None, nc: str, cnonce: str
) -> str:
    """The ``response`` value: MD5(HA1:nonce:nc:cnonce:qop:HA2), or MD5(HA1:nonce:HA2) without qop."""
    ha2 = md5_hex(f"{method}:{uri}")
    if qop:
        return md5_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return md5_hex(f"{ha1}:{nonce}:{ha2}")


def authorization(
    chal: Challenge, username: str, ha1: str, method: str, uri: str, nc: int, cnonce: str | None = None
) -> str:
    """The Authorization / Proxy-Authorization header value answering ``chal``."""
    if chal.qop:
        cnonce = cnonce or token(64)
        ncs = f"{nc:08x}"
        resp = digest_response(ha1, method, uri, chal.nonce, chal.qop, ncs, cnonce)
        value = (
            f'Digest username="{username}", realm="{chal.realm}", nonce="{chal.nonce}", uri="{uri}", '
            f'response="{resp}", algorithm=MD5, cnonce="{cnonce}", qop={chal.qop}, nc={ncs}'
        )
    else:
        resp = digest_response(ha1, method, uri, chal.nonce, None, "", "")
        value = (
            f'Digest username="{username}", realm="{chal.realm}", nonce="{chal.nonce}", uri="{uri}", '
            f'response="{resp}", algorithm=MD5'
        )
    if chal.opaque is not None:
        value += f', opaque="{chal.opaque}"'
    return value


# ---------------------------------------------------------------- responses to requests


def build_response(
    req: SipMessage,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    extra: str = "",
    body: bytes = b"",
    content_type: str | None = None,
    record_route: bool = False,
    server: str | None = None,
) -> bytes:
    """A response to ``req``: Via, From, Call-ID, CSeq copied; To gets ``to_tag`` unless it has one.

    ``extra`` is pre-formatted header lines ending in CRLF (Contact, Allow, ...); ``record_route``
    copies the Record-Route set (18x/2xx to INVITE, RFC 3261 12.1.1).
    """
    h = req.headers
    lines = [f"SIP/2.0 {status} {reason}"]
    lines.extend(f"Via: {v}" for v in h.get("via", ()))
    if record_route:
        lines.extend(f"Record-Route: {v}" for v in h.get("record-route", ()))
    lines.append(f"From: {req.get('from', '')}")
    to = req.get("to", "") or ""
    if to_tag and tag_of(to) is None:
        to = f"{to};tag={to_tag}"
    lines.append(f"To: {to}")
    lines.append(f"Call-ID: {req.call_id}")
    lines.append(f"CSeq: {req.get('cseq', '')}")
    if server:
        lines.append(f"Server: {server}")
    head = "\r\n".join(lines) + "\r\n" + extra
    if body:
        head += f"Content-Type: {content_type or 'application/sdp'}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def minimal_sdp(host: str, port: int, session_id: int) -> bytes:
    """A minimal audio offer/answer (PCMU, PCMA, telephone-event); no media is actually sent."""
    ip_ver = "IP6" if ":" in host else "IP4"
    return (
        f"v=0\r\no=- {session_id} {session_id} IN {ip_ver} {host}\r\ns=-\r\nc=IN {ip_ver} {host}\r\n"
        f"t=0 0\r\nm=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    ).encode()
