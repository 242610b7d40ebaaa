"""SIP URIs and the header values that carry them (From, To, Contact, Route, Via parameters).

Why string slicing and no URI object: these run once per datagram in the phone swarm and once per distinct
value in the capture decoder, where an object per URI would cost more than the lookup it serves. Every
function takes what the wire gives (display names, angle brackets, header parameters) and never raises.
"""

from __future__ import annotations


def format_host(host: str) -> str:
    """A host as written in SIP URIs and Via (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def hostport(host: str, port: int) -> str:
    """``host:port`` as written in a URI or Via (IPv6 in brackets)."""
    return f"{format_host(host)}:{port}"


def uri_of(value: str) -> str:
    """The URI of a name-addr (``"x" <sip:a@b>;p``) or addr-spec (``sip:a@b;p``) header value.

    In an addr-spec everything after the first ';' is a header parameter (RFC 3261 section 20.10).
    """
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        return value[lt + 1 : gt if gt > 0 else None]
    return value.split(";", 1)[0].strip()


def user_of(uri: str | None) -> str | None:
    """User part of a sip:/sips:/tel: URI ("sip:1001@pbx;x=y" -> "1001"); None when it has none.

    A password (``user:pw@``) and user parameters (``user;phone-context=...@``, ``tel:+1234;ext=5``) are
    dropped; a tel: URI is all user.
    """
    if not uri:
        return None
    colon = uri.find(":")
    if colon < 0:
        return None
    at = uri.find("@", colon)
    if at >= 0:
        user = uri[colon + 1 : at]
    elif uri[:colon].lower() == "tel":
        user = uri[colon + 1 :]
    else:
        return None
    for sep in ":;?":
        cut = user.find(sep)
        if cut >= 0:
            user = user[:cut]
    return user or None


def hostport_of(uri: str, default_port: int = 5060) -> tuple[str, int]:
    """(host, port) of a SIP URI: no user, parameters or brackets ("" when there is no host)."""
    colon = uri.find(":")
    rest = uri[colon + 1 :] if colon >= 0 else uri
    for sep in ";?":
        cut = rest.find(sep)
        if cut >= 0:
            rest = rest[:cut]
    at = rest.rfind("@")
    if at >= 0:
        rest = rest[at + 1 :]
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            return rest[1:], default_port
        host, port_s = rest[1:end], rest[end + 2 :] if rest[end + 1 : end + 2] == ":" else ""
    else:
        host, _, port_s = rest.partition(":")
    ok = port_s.isascii() and port_s.isdigit() and len(port_s) <= 5  # "²" and 10,000 digits are no port
    return host, int(port_s) if ok else default_port


def host_of(uri: str | None) -> str | None:
    """Host of a sip:/sips: URI without port or parameters ("sip:u@[::1]:5060;t=u" -> "::1")."""
    if not uri or ":" not in uri:
        return None
    return hostport_of(uri)[0] or None


def param(value: str, name: str) -> str | None:
    """A ``;name=value`` header parameter (after any <uri>), "" for a flag; ``name`` in lower case."""
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


def split_commas(value: str) -> list[str]:
    """The entries of a comma-joined header value; commas inside <...> and quotes do not split."""
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
