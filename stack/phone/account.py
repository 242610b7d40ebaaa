"""One SIP account of an emulated phone: its state, what it reports, and what every part of it shares.

:class:`Account` holds every field of a phone (one ``__slots__`` for all: 10,000 idle phones must stay small
and taskless), the status a management API reports, event emission, and the digest state shared by
registration and calls. :mod:`stack.phone.registration` and :mod:`stack.phone.calls` add behaviour;
:class:`stack.phone.ua.Phone` puts them together.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from sipcore.digest import Challenge, authorization, ha1, parse_challenge
from sipcore.message import SipMessage, token
from sipcore.uri import format_host

if TYPE_CHECKING:
    from stack.phone.calls import Call
    from stack.phone.endpoint import SipEndpoint

log = logging.getLogger("stack.phone")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER"
USER_AGENT = "hil-phone/1.0"


class PhoneEvent(NamedTuple):
    """One state change of a phone; ``ts`` is ``time.monotonic()``.

    ``kind``: registered | unregistered | registration_failed | incoming_call | outgoing_call |
    call_answered | call_ended. ``detail`` carries registrar, codes, reasons, peer.
    """

    kind: str
    ts: float
    extension: str
    detail: dict[str, Any]


EventCallback = Callable[[PhoneEvent], None]


class Account:
    """One SIP account on a shared endpoint: the fields and helpers of :class:`~stack.phone.ua.Phone`.

    ``auto_answer``: seconds from ringing to answering an incoming call, None to wait for
    ``answer()``. ``busy``: reject every incoming call with 486. ``contact_user`` (default the
    extension) must be unique on the endpoint: the PBX sends INVITEs to it.
    """

    __slots__ = (
        "endpoint",
        "extension",
        "password",
        "registrar",
        "expires",
        "domain",
        "contact_user",
        "on_event",
        "auto_answer",
        "busy",
        "_reg_call_id",
        "_cseq",
        "_from_tag",
        "_registered",
        "_bound",
        "_pending",
        "_granted",
        "_registered_at",
        "_last_change",
        "_last_error",
        "_timer",
        "_gen",
        "_active",
        "_fails",
        "_chal",
        "_chal_at",
        "_ha1",
        "_ha1_key",
        "_nc",
        "_call",
        "_last_final",
        "_inflight",
        "counts",
    )

    def __init__(
        self,
        endpoint: SipEndpoint,
        extension: str,
        password: str,
        registrar: tuple[str, int],
        expires: int = 300,
        *,
        on_event: EventCallback | None = None,
        auto_answer: float | None = 0.0,
        busy: bool = False,
        contact_user: str | None = None,
        domain: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.extension = extension
        self.password = password
        self.registrar = (registrar[0], int(registrar[1]))
        self.expires = int(expires)
        self.domain = domain
        self.contact_user = contact_user or extension
        self.on_event = on_event
        self.auto_answer = auto_answer
        self.busy = busy
        self._reg_call_id = f"{token(80)}@{extension}"
        self._cseq = 0
        self._from_tag = token(32)
        self._registered = False
        self._bound: tuple[str, int] | None = None
        self._pending = 0
        self._granted = 0
        self._registered_at: float | None = None
        self._last_change = time.monotonic()
        self._last_error: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._gen = 0
        self._active = False
        self._fails = 0
        self._chal: Challenge | None = None
        self._chal_at: tuple[str, int] | None = None
        self._ha1: str | None = None
        self._ha1_key: tuple[str, str] | None = None  # (realm, algorithm) of the cached HA1
        self._nc = 0
        self._call: Call | None = None
        self._last_final: tuple[str, bytes] | None = None  # (Call-ID, 487/603) of the last refused INVITE
        # REGISTER transactions (expires > 0) in flight, by their registrar: a move ends those toward the
        # old registrar, so a dead PBX that comes back within timer F never gets the phone back.
        self._inflight: dict[asyncio.Future[SipMessage | None], tuple[str, int]] = {}
        self.counts = [0, 0, 0]  # registrations, refreshes, failures
        endpoint.attach(self)  # type: ignore[arg-type]  # an Account is only ever built as a Phone

    def __repr__(self) -> str:
        return f"<Phone {self.extension} {self.registrar[0]}:{self.registrar[1]} reg={self._registered}>"

    # ------------------------------------------------------------ public state

    @property
    def registered(self) -> bool:
        return self._registered

    @property
    def active(self) -> bool:
        """Whether the account is enabled: registered or trying to be (refreshes and retries run)."""
        return self._active

    @property
    def call_state(self) -> str:
        """ "idle", "ringing" (alerting or dialling, either direction) or "in_call"."""
        c = self._call
        if c is None:
            return "idle"
        return "in_call" if c.confirmed else "ringing"

    def status(self) -> dict[str, Any]:
        """Everything a management API reports about the account (monotonic timestamps)."""
        host, port = self.registrar
        lhost = self.endpoint.contact_host(host) if self.endpoint.is_open else ""
        c = self._call
        return {
            "extension": self.extension,
            "registrar": {"host": host, "port": port},
            "registered": self._registered,
            "state": (
                "registered"
                if self._registered
                else ("registering" if self._pending else ("failed" if self._last_error else "unregistered"))
            ),
            "expires": self._granted if self._registered else 0,
            "registered_since": self._registered_at if self._registered else None,
            "last_change": self._last_change,
            "last_error": self._last_error,
            "contact": f"sip:{self.contact_user}@{format_host(lhost)}:{self.endpoint.local[1]}",
            "call_state": self.call_state,
            "call": None
            if c is None
            else {
                "call_id": c.call_id,
                "direction": "outgoing" if c.outgoing else "incoming",
                "peer": c.peer,
                "since": c.started,
            },
            "registrations": self.counts[0],
            "refreshes": self.counts[1],
            "failures": self.counts[2],
        }

    def _emit(self, kind: str, **detail: Any) -> None:
        now = time.monotonic()
        if kind in ("registered", "unregistered", "registration_failed"):
            self._last_change = now
        cb = self.on_event
        if cb is not None:
            try:
                cb(PhoneEvent(kind, now, self.extension, detail))
            except Exception:
                log.exception("phone %s: event callback failed", self.extension)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ------------------------------------------------------------ digest, shared by registration and calls

    def _auth_header(self, chal: Challenge, method: str, uri: str) -> str:
        """Answer ``chal``: the HA1 is computed once per realm, ``nc`` counts uses of the nonce."""
        key = (chal.realm, chal.algorithm)
        if self._ha1 is None or self._ha1_key != key:
            self._ha1 = ha1(self.extension, chal.realm, self.password, chal.algorithm)
            self._ha1_key = key
        self._nc += 1
        return authorization(chal, method, uri, self.extension, ha1_hex=self._ha1, nc=self._nc)

    def _take_challenge(self, resp: SipMessage, at: tuple[str, int]) -> tuple[str, Challenge] | None:
        """The header name to answer with and the first usable challenge of a 401/407; remembered."""
        name = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        for value in resp.header_values(name):
            chal = parse_challenge(value)
            if chal is not None:
                if self._chal is None or chal.nonce != self._chal.nonce:
                    self._nc = 0
                self._chal, self._chal_at = chal, at
                return ("Authorization" if resp.status == 401 else "Proxy-Authorization"), chal
        return None

    def _is_stale(self, resp: SipMessage) -> bool:
        name = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        chal = parse_challenge(resp.header(name, "") or "")
        return chal is not None and chal.stale

    # ------------------------------------------------------------ what goes on the wire

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.endpoint.send(data, addr)

    def _tag_for(self, call_id: str) -> str:
        # Deterministic per Call-ID, so a retransmitted INVITE gets the same stateless answer.
        return f"{zlib.crc32(f'{call_id}|{self.contact_user}'.encode()):08x}"

    def _contact_hdr(self) -> str:
        ep = self.endpoint
        lhost = format_host(ep.contact_host(self.registrar[0]))
        return f"Contact: <sip:{self.contact_user}@{lhost}:{ep.local[1]}>\r\n"

    def _ua(self) -> str:
        return self.endpoint.user_agent

    def _sdp(self, session_id: int) -> bytes:
        """This phone's SDP offer/answer: an RTP port of its own (no media is sent)."""
        host = self.endpoint.contact_host(self.registrar[0])
        return minimal_sdp(host, 40000 + (zlib.crc32(self.contact_user.encode()) % 10000) * 2, session_id)


def minimal_sdp(host: str, port: int, session_id: int) -> bytes:
    """A minimal audio offer/answer (PCMU, PCMA, telephone-event); no media is actually sent."""
    ip_ver = "IP6" if ":" in host else "IP4"
    return (
        f"v=0\r\no=- {session_id} {session_id} IN {ip_ver} {host}\r\ns=-\r\nc=IN {ip_ver} {host}\r\n"
        f"t=0 0\r\nm=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    ).encode()
