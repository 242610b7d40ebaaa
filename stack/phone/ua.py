"""Asyncio SIP user agent: thousands of emulated IP phones sharing one UDP socket.

Why not pyVoIP: it is UDP-only like this one, but thread-based (a thread per phone) and bound to one
registrar for life; the swarm needs 10,000 phones on one event loop that can move to the other site's
PBX. So this is a small RFC 3261 UA of its own:

- :class:`SipEndpoint` owns the socket. Responses are matched to client transactions by the top Via
  branch; requests go to a phone by the Request-URI user (each phone's Contact has its own user part),
  falling back to the Call-ID of a dialog the phone is in.
- Client transactions retransmit with RFC 3261 timers (T1 doubling to T2 for non-INVITE, doubling
  for INVITE, give up after timer F/B = 64*T1), each interval jittered so a storm of thousands of
  phones re-registering at once does not retransmit in lock-step.
- :class:`Phone` registers with MD5 digest (401 and 407, qop=auth with nc/cnonce, nonce re-used on
  refresh), refreshes at 50-80 % of the granted expiry, re-registers with backoff after timeouts and 5xx,
  answers INVITE (100, 180, then 200 with a minimal SDP after ``auto_answer`` seconds, or 486 when
  busy), BYE, CANCEL and OPTIONS, and can place a call and hang up.
- Idle phones own no task: a phone's refresh/retry timer is one ``loop.call_later`` handle, transaction
  timers share a 10 ms timer wheel, and a task exists only while a REGISTER or call is in flight.
- The endpoint drains the socket in batches and flushes sends once per loop iteration (see
  :meth:`SipEndpoint.send`); with that, the REGISTER rate is 0.7-0.95x SIPp's against the same Kamailio
  on a 2-core host (bench/bench_register.py).

No media: the SDP names an RTP port but no RTP is sent or received.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
import zlib
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from stack.phone.sip import (
    Challenge,
    SipMessage,
    _split_commas,
    authorization,
    build_response,
    format_host,
    ha1_of,
    hostport_of,
    minimal_sdp,
    new_branch,
    param,
    parse,
    parse_challenge,
    tag_of,
    token,
    uri_of,
    user_of,
)

log = logging.getLogger("stack.phone")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"
USER_AGENT = "hil-phone/1.0"
_uniform = random.uniform
_INF = float("inf")


@dataclass(slots=True, frozen=True)
class SipTimers:
    """RFC 3261 timer values (seconds), plus the retransmission jitter and registration retry policy.

    ``jitter`` is the +- fraction applied to every retransmission interval. ``retry_base``..``retry_max``
    is the exponential backoff after a timeout or 5xx; ``reject_retry`` the wait after a 4xx (wrong
    password, unknown extension), as a real phone's "registration retry timer".
    """

    t1: float = 0.5
    t2: float = 4.0
    timer_f: float = 32.0
    jitter: float = 0.2
    retry_base: float = 1.0
    retry_max: float = 30.0
    reject_retry: float = 60.0


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


class _Wheel:
    """Coarse timers for client transactions: one loop timer per 10 ms slot, not two per transaction.

    Why: during a registration storm thousands of transactions start within milliseconds; a loop
    ``call_at`` per slot plus a list append per transaction is far cheaper than creating and cancelling
    ``TimerHandle``s. A slot fires at or after its due time, never before.
    """

    __slots__ = ("loop", "res", "slots")

    def __init__(self, loop: asyncio.AbstractEventLoop, res: float = 0.01) -> None:
        self.loop = loop
        self.res = res
        self.slots: dict[int, list[_ClientTx]] = {}

    def add(self, when: float, tx: _ClientTx) -> None:
        key = int(when / self.res) + 1
        lst = self.slots.get(key)
        if lst is None:
            self.slots[key] = [tx]
            self.loop.call_at(key * self.res, self._fire, key)
        else:
            lst.append(tx)

    def _fire(self, key: int) -> None:
        lst = self.slots.pop(key, None)
        if lst:
            now = self.loop.time()
            for tx in lst:
                tx.tick(now)


class _ClientTx:
    """One client transaction: retransmits until a final response, timer F/B, or cancellation."""

    __slots__ = (
        "ep",
        "key",
        "data",
        "dest",
        "fut",
        "invite",
        "interval",
        "next_retx",
        "deadline",
        "on_provisional",
        "make_ack",
        "ring_timeout",
    )

    def __init__(
        self,
        ep: SipEndpoint,
        key: str,
        data: bytes,
        dest: tuple[str, int],
        invite: bool,
        on_provisional: Callable[[SipMessage], None] | None,
        make_ack: Callable[[SipMessage], bytes] | None,
        ring_timeout: float,
        give_up: float | None = None,
    ) -> None:
        self.ep = ep
        self.key = key
        self.data = data
        self.dest = dest
        self.invite = invite
        self.on_provisional = on_provisional
        self.make_ack = make_ack
        self.ring_timeout = ring_timeout
        self.fut: asyncio.Future[SipMessage | None] = ep.loop.create_future()
        t = ep.timers
        now = ep.loop.time()
        self.interval = t.t1
        self.next_retx = now + ep.jittered(t.t1)
        self.deadline = now + (t.timer_f if give_up is None else give_up)
        ep.send(data, dest)
        ep.wheel.add(self.next_retx, self)

    def _finish(self, result: SipMessage | None) -> None:
        tx = self.ep._tx
        if tx.get(self.key) is self:
            del tx[self.key]
        if not self.fut.done():
            self.fut.set_result(result)

    def tick(self, now: float) -> None:
        if self.fut.done():  # answered, or the awaiting side gave up (cancelled)
            self._finish(None)
            return
        if now >= self.deadline:
            self.ep.stats["timeouts"] += 1
            self._finish(None)
            return
        if now >= self.next_retx:
            ep = self.ep
            ep.send(self.data, self.dest)
            ep.stats["retransmits"] += 1
            self.interval = self.interval * 2 if self.invite else min(self.interval * 2, ep.timers.t2)
            self.next_retx = now + ep.jittered(self.interval)
        self.ep.wheel.add(min(self.next_retx, self.deadline), self)

    def on_response(self, msg: SipMessage) -> None:
        if self.fut.done():
            return
        if msg.status < 200:
            if self.invite:
                # Proceeding: the INVITE is no longer retransmitted; wait for the final response.
                if self.next_retx != _INF:
                    self.next_retx = _INF
                    self.deadline = self.ep.loop.time() + self.ring_timeout
            elif self.interval < self.ep.timers.t2:
                # Non-INVITE proceeding: keep retransmitting, but at T2.
                self.interval = self.ep.timers.t2
            if self.on_provisional is not None:
                self.on_provisional(msg)
            return
        if self.invite and msg.status >= 300 and self.make_ack is not None:
            self.ep.send(self.make_ack(msg), self.dest)
        self._finish(msg)


class SipEndpoint(asyncio.DatagramProtocol):
    """One UDP socket shared by many phones (see the module docstring for the demultiplexing).

    :meth:`open` drives the socket itself (``add_reader``, draining up to 256 datagrams per wake-up,
    direct non-blocking ``sendto``): asyncio's own datagram transport reads one datagram per event loop
    iteration, which halves the REGISTER rate in a storm. As a plain ``DatagramProtocol`` it also works
    under ``loop.create_datagram_endpoint``.
    """

    def __init__(
        self,
        timers: SipTimers | None = None,
        *,
        contact_host: str | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.timers = timers or SipTimers()
        self.user_agent = user_agent
        self._contact_host = contact_host
        self._route_cache: dict[str, str] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._backlog: deque[tuple[bytes, tuple[str, int]]] = deque()
        self._out: list[tuple[bytes, tuple[str, int]]] = []
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = asyncio.get_event_loop()
        self.wheel = _Wheel(self.loop)
        self.local: tuple[str, int] = ("", 0)
        self._tx: dict[str, _ClientTx] = {}
        self._users: dict[str, Phone] = {}
        self._dialogs: dict[str, Phone] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stats: dict[str, int] = {
            "rx": 0,
            "tx": 0,
            "retransmits": 0,
            "timeouts": 0,
            "unparsable": 0,
            "unmatched": 0,
            "errors": 0,
        }

    # ------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        timers: SipTimers | None = None,
        contact_host: str | None = None,
        user_agent: str = USER_AGENT,
        bufsize: int = 4 << 20,
    ) -> SipEndpoint:
        """Bind a UDP socket on ``host:port`` (0 = any free port) and return the endpoint on it.

        Socket buffers are raised (up to the kernel's rmem_max/wmem_max) so a burst of thousands of
        responses during a failover storm is queued, not dropped.
        """
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, bufsize)
                except OSError:
                    pass
            sock.bind((host, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        ep = cls(timers, contact_host=contact_host, user_agent=user_agent)
        ep.loop = loop
        ep.wheel = _Wheel(loop)
        ep._sock = sock
        ep.local = sock.getsockname()[:2]
        loop.add_reader(sock.fileno(), ep._read_ready)
        return ep

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.loop = asyncio.get_running_loop()
        self.wheel = _Wheel(self.loop)
        self.local = transport.get_extra_info("sockname")[:2]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a dead PBX and the like: retransmission and timers handle it.
        self.stats["errors"] += 1

    @property
    def is_open(self) -> bool:
        return self._sock is not None or self.transport is not None

    def close(self) -> None:
        """Close the socket; pending transactions end as timeouts."""
        for tx in list(self._tx.values()):
            tx._finish(None)
        for phone in list(self._users.values()):
            phone._cancel_timer()
        self._flush()
        sock = self._sock
        if sock is not None:
            self._sock = None
            self.loop.remove_reader(sock.fileno())
            if self._backlog:
                self.loop.remove_writer(sock.fileno())
                self._backlog.clear()
            sock.close()
        if self.transport is not None:
            self.transport.close()

    def _read_ready(self) -> None:
        sock = self._sock
        if sock is None:
            return
        recv = sock.recvfrom
        handle = self.datagram_received
        for _ in range(256):
            try:
                data, addr = recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error reported on the socket (a dead PBX): timers handle it
                self.stats["errors"] += 1
                continue
            handle(data, addr)

    def _write_ready(self) -> None:
        sock = self._sock
        backlog = self._backlog
        while sock is not None and backlog:
            data, dest = backlog[0]
            try:
                sock.sendto(data, dest)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.stats["errors"] += 1
            else:
                self.stats["tx"] += 1
            backlog.popleft()
        if sock is not None:
            self.loop.remove_writer(sock.fileno())

    # ------------------------------------------------------------ helpers for phones

    def attach(self, phone: Phone) -> None:
        other = self._users.get(phone.contact_user)
        if other is not None and other is not phone:
            raise ValueError(f"contact user {phone.contact_user!r} already used on this endpoint")
        self._users[phone.contact_user] = phone

    def detach(self, phone: Phone) -> None:
        if self._users.get(phone.contact_user) is phone:
            del self._users[phone.contact_user]

    @property
    def phones(self) -> list[Phone]:
        return list(self._users.values())

    def jittered(self, interval: float) -> float:
        j = self.timers.jitter
        return interval * _uniform(1.0 - j, 1.0 + j) if j else interval

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        """Queue a datagram; the queue is flushed once per event-loop iteration.

        Why batched: sending as soon as each coroutine produces a request wakes a PBX worker per
        datagram, which then preempts this process mid-batch; flushing after the iteration's work
        raised the storm REGISTER rate by about a quarter on a 2-core host (bench/bench_register.py).
        """
        if self._sock is not None:
            out = self._out
            out.append((data, dest))
            if len(out) == 1:
                self.loop.call_soon(self._flush)
        elif self.transport is not None:
            self.transport.sendto(data, dest)
            self.stats["tx"] += 1

    def _flush(self) -> None:
        out, self._out = self._out, []
        sock = self._sock
        if sock is None:
            return
        backlog = self._backlog
        sendto = sock.sendto
        sent = 0
        for item in out:
            if backlog:
                backlog.append(item)
                continue
            try:
                sendto(*item)
            except (BlockingIOError, InterruptedError):
                backlog.append(item)
                self.loop.add_writer(sock.fileno(), self._write_ready)
                continue
            except OSError:  # unreachable network and the like: the transaction's timers decide
                self.stats["errors"] += 1
                continue
            sent += 1
        self.stats["tx"] += sent

    def contact_host(self, dest_host: str) -> str:
        """The address to put in Via/Contact: the bound address, or the route's source for a wildcard."""
        cached = self._route_cache.get(dest_host)
        if cached is not None:
            return cached
        host = self._contact_host or self.local[0]
        try:
            unspecified = ipaddress.ip_address(host).is_unspecified
        except ValueError:
            unspecified = False
        if unspecified:
            fam = socket.AF_INET6 if ":" in dest_host else socket.AF_INET
            with socket.socket(fam, socket.SOCK_DGRAM) as probe:
                probe.connect((dest_host, 9))
                host = probe.getsockname()[0]
        if len(self._route_cache) < 1024:
            self._route_cache[dest_host] = host
        return host

    def request(
        self,
        data: bytes,
        dest: tuple[str, int],
        branch: str,
        *,
        invite: bool = False,
        cancel: bool = False,
        on_provisional: Callable[[SipMessage], None] | None = None,
        make_ack: Callable[[SipMessage], bytes] | None = None,
        ring_timeout: float = 60.0,
        give_up: float | None = None,
    ) -> asyncio.Future[SipMessage | None]:
        """Send a request as a client transaction; the future gives the final response or None (timeout).

        ``give_up`` replaces timer F/B (seconds). Cancelling the future stops the retransmissions. A
        CANCEL shares its INVITE's branch, so it is keyed apart (``cancel=True``).
        """
        key = "C" + branch if cancel else branch
        tx = _ClientTx(self, key, data, dest, invite, on_provisional, make_ack, ring_timeout, give_up)
        self._tx[key] = tx
        return tx.fut

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task kept alive until done (exceptions are logged, not lost)."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("phone task failed", exc_info=task.exception())

    # ------------------------------------------------------------ receive path

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.stats["rx"] += 1
        try:
            msg = parse(data)
            if msg is None:
                self.stats["unparsable"] += 1
                return
            if msg.method is None:
                via = msg.get("via")
                branch = param(via, "branch") if via else None
                if branch:
                    cseq = msg.get("cseq", "") or ""
                    tx = self._tx.get("C" + branch if cseq.endswith("CANCEL") else branch)
                    if tx is not None:
                        tx.on_response(msg)
                        return
                phone = self._dialogs.get(msg.call_id)
                if phone is not None:
                    phone._on_stray_response(msg)
                else:
                    self.stats["unmatched"] += 1
                return
            user = user_of(msg.uri or "")
            phone = self._users.get(user) if user else None
            if phone is None:
                phone = self._dialogs.get(msg.call_id)
            if phone is None:
                self._no_phone(msg, addr)
                return
            phone._on_request(msg, (addr[0], addr[1]))
        except Exception:
            self.stats["errors"] += 1
            log.exception("error handling a datagram from %s", addr)

    def _no_phone(self, msg: SipMessage, addr: tuple[Any, int]) -> None:
        self.stats["unmatched"] += 1
        if msg.method == "ACK":
            return
        tag = f"{zlib.crc32(msg.call_id.encode()):08x}"
        if msg.method == "OPTIONS" and not user_of(msg.uri or ""):
            resp = build_response(msg, 200, "OK", to_tag=tag, extra=f"Allow: {ALLOW}\r\n")
        else:
            resp = build_response(msg, 404, "Not Found", to_tag=tag)
        self.send(resp, (addr[0], addr[1]))


class _Call:
    """The one call a phone can have (allocated only while there is a call)."""

    __slots__ = (
        "call_id",
        "outgoing",
        "peer",
        "local_tag",
        "local_hdr",
        "remote_hdr",
        "remote_target",
        "routes",
        "local_cseq",
        "invite",
        "invite_addr",
        "last_resp",
        "answered",
        "confirmed",
        "alerting",
        "started",
        "h_answer",
        "h_retx",
        "h_dead",
        "retx_interval",
        "ack",
        "invite_uri",
        "invite_via",
        "invite_cseq",
        "invite_branch",
        "invite_fut",
    )

    def __init__(self, call_id: str, outgoing: bool, peer: str, local_tag: str) -> None:
        self.call_id = call_id
        self.outgoing = outgoing
        self.peer = peer
        self.local_tag = local_tag
        self.local_hdr = ""
        self.remote_hdr = ""
        self.remote_target = ""
        self.routes: list[str] = []
        self.local_cseq = random.randint(1, 10_000)
        self.invite: SipMessage | None = None
        self.invite_addr: tuple[str, int] | None = None
        self.last_resp: bytes | None = None
        self.answered = False
        self.confirmed = False
        self.alerting = False
        self.started = time.monotonic()
        self.h_answer: asyncio.TimerHandle | None = None
        self.h_retx: asyncio.TimerHandle | None = None
        self.h_dead: asyncio.TimerHandle | None = None
        self.retx_interval = 0.0
        self.ack: bytes | None = None
        self.invite_uri = ""
        self.invite_via = ""
        self.invite_cseq = 0
        self.invite_branch = ""
        self.invite_fut: asyncio.Future[SipMessage | None] | None = None

    def cancel_timers(self) -> None:
        for h in (self.h_answer, self.h_retx, self.h_dead):
            if h is not None:
                h.cancel()
        self.h_answer = self.h_retx = self.h_dead = None


class Phone:
    """One emulated IP phone (one SIP account) on a shared :class:`SipEndpoint`.

    ``auto_answer``: seconds from ringing to answering an incoming call, None to wait for
    :meth:`answer`. ``busy``: reject every incoming call with 486. ``contact_user`` (default the
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
        "_ha1_realm",
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
        self._ha1_realm: str | None = None
        self._nc = 0
        self._call: _Call | None = None
        self._last_final: tuple[str, bytes] | None = None  # (Call-ID, 487/603) of the last refused INVITE
        # REGISTER transactions (expires > 0) in flight, by their registrar: a move ends those toward the
        # old registrar, so a dead PBX that comes back within timer F never gets the phone back.
        self._inflight: dict[asyncio.Future[SipMessage | None], tuple[str, int]] = {}
        self.counts = [0, 0, 0]  # registrations, refreshes, failures
        endpoint.attach(self)

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

    # ------------------------------------------------------------ registration

    async def register(self) -> bool:
        """Register at the current registrar; True on 2xx. Keeps refreshing (and retrying) afterwards."""
        self._active = True
        self._gen += 1
        self._cancel_timer()
        return await self._register_cycle(self._gen)

    async def unregister(self) -> None:
        """Remove the binding (Expires: 0, best effort) and stop refreshing and retrying."""
        self._active = False
        self._gen += 1
        self._cancel_timer()
        self._drop_inflight(("", 0))  # a REGISTER still in flight must not bind after this
        was = self._registered
        bound = self._bound
        self._registered = False
        self._bound = None
        code = None
        if bound is not None or self._pending:
            target = bound or self.registrar
            code, _reason, _granted = await self._do_register(target, 0, self._reg_call_id)
        if was or bound is not None:
            self._emit("unregistered", registrar=bound or self.registrar, code=code, reason="unregister")

    async def move_to(self, registrar: tuple[str, int]) -> bool:
        """Register at another PBX: the old binding is removed in the background, the new one awaited."""
        new = (registrar[0], int(registrar[1]))
        self._gen += 1
        gen = self._gen
        self._cancel_timer()
        old, old_bound, old_call_id = self.registrar, self._bound, self._reg_call_id
        was = self._registered
        self.registrar = new
        self._registered = False
        self._bound = None
        self._fails = 0
        stale = self._drop_inflight(new)
        if old_bound is not None and old_bound == new:
            self._bound = old_bound  # same server: a plain re-register refreshes the binding
        else:
            self._reg_call_id = f"{token(80)}@{self.extension}"
            if old_bound is not None:
                # Best effort and short: after an unplanned failure the old PBX is usually gone, and
                # retransmitting thousands of un-REGISTERs to it for timer F would only add load.
                give_up = min(self.endpoint.timers.timer_f, 8 * self.endpoint.timers.t1)
                self.endpoint.spawn(self._do_register(old_bound, 0, old_call_id, give_up))
            for where in stale - {old_bound}:
                # A REGISTER was in flight there and may have arrived: take it back the same way.
                give_up = min(self.endpoint.timers.timer_f, 8 * self.endpoint.timers.t1)
                self.endpoint.spawn(self._do_register(where, 0, old_call_id, give_up))
        if was and old != new:
            self._emit("unregistered", registrar=old, code=None, reason="moved")
        self._active = True
        return await self._register_cycle(gen)

    def _drop_inflight(self, keep: tuple[str, int]) -> set[tuple[str, int]]:
        """End every REGISTER in flight to a registrar other than ``keep`` (no more retransmissions; its
        awaiting side sees a timeout); returns those registrars."""
        gone = set()
        for fut, where in list(self._inflight.items()):
            if where != keep:
                gone.add(where)
                del self._inflight[fut]
                if not fut.done():
                    fut.set_result(None)
        return gone

    async def restart(self, pause: float = 1.0) -> bool:
        """What a reboot does to the account: drop any call (silently, as a rebooting phone does),
        unregister, pause, register again."""
        if self._call is not None:
            self._end_call("restart")
        await self.unregister()
        await asyncio.sleep(pause)
        return await self.register()

    def close(self) -> None:
        """Stop timers and leave the endpoint (no SIP sent; use :meth:`unregister` first to be polite)."""
        self._active = False
        self._gen += 1
        self._cancel_timer()
        if self._call is not None:
            self._end_call("closed")
        self.endpoint.detach(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timer_fired(self, gen: int) -> None:
        self._timer = None
        if gen == self._gen and self._active:
            self.endpoint.spawn(self._register_cycle(gen))

    async def _register_cycle(self, gen: int) -> bool:
        registrar = self.registrar
        try:
            code, reason, granted = await self._do_register(registrar, self.expires, self._reg_call_id)
        except asyncio.CancelledError:
            # The caller gave up waiting (e.g. wait_for around move_to): keep trying in the background,
            # as a real phone would, instead of being left enabled but with nothing scheduled.
            if gen == self._gen and self._active and self._timer is None:
                delay = self.endpoint.jittered(self.endpoint.timers.retry_base)
                self._timer = self.endpoint.loop.call_later(delay, self._timer_fired, gen)
            raise
        if gen != self._gen:
            return 200 <= code < 300 and granted > 0
        t = self.endpoint.timers
        if 200 <= code < 300 and granted > 0:
            self._bound = registrar
            self._fails = 0
            self._last_error = None
            self._granted = granted
            if self._registered:
                self.counts[1] += 1
            else:
                self._registered = True
                self._registered_at = time.monotonic()
                self.counts[0] += 1
                self._emit("registered", registrar=registrar, expires=granted)
            self._timer = self.endpoint.loop.call_later(
                max(granted * _uniform(0.5, 0.8), 0.5), self._timer_fired, gen
            )
            return True
        self._fails += 1
        self.counts[2] += 1
        self._last_error = f"{code} {reason}" if code else reason
        was = self._registered
        self._registered = False
        self._emit("registration_failed", registrar=registrar, code=code, reason=reason, was_registered=was)
        if self._active:
            if code == 0 or code >= 500 or code == 408:
                delay = min(t.retry_max, t.retry_base * 2 ** min(self._fails - 1, 16))
                delay *= _uniform(0.5, 1.0)
            else:
                delay = t.reject_retry * _uniform(0.8, 1.0)
            self._timer = self.endpoint.loop.call_later(delay, self._timer_fired, gen)
        return False

    def _auth_header(self, chal: Challenge, method: str, uri: str) -> str:
        if self._ha1 is None or self._ha1_realm != chal.realm:
            self._ha1 = ha1_of(self.extension, chal.realm, self.password)
            self._ha1_realm = chal.realm
        self._nc += 1
        return authorization(chal, self.extension, self._ha1, method, uri, self._nc)

    def _take_challenge(self, resp: SipMessage, at: tuple[str, int]) -> tuple[str, Challenge] | None:
        name = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        for value in resp.all(name):
            chal = parse_challenge(value)
            if chal is not None:
                if self._chal is None or chal.nonce != self._chal.nonce:
                    self._nc = 0
                self._chal, self._chal_at = chal, at
                return ("Authorization" if resp.status == 401 else "Proxy-Authorization"), chal
        return None

    async def _do_register(
        self, registrar: tuple[str, int], expires: int, call_id: str, give_up: float | None = None
    ) -> tuple[int, str, int]:
        """One REGISTER exchange including digest challenges: (status or 0, reason, granted expires)."""
        ep = self.endpoint
        host, port = registrar
        hp = format_host(host)
        lhost = format_host(ep.contact_host(host))
        lport = ep.local[1]
        ruri = f"sip:{hp}:{port}"
        aor = f"sip:{self.extension}@{format_host(self.domain) if self.domain else hp}"
        curi = f"sip:{self.contact_user}@{lhost}:{lport}"
        auth = ""
        answered_fresh = False
        if self._chal is not None and self._chal_at == registrar:
            auth = f"Authorization: {self._auth_header(self._chal, 'REGISTER', ruri)}\r\n"
        self._pending += 1
        try:
            for _ in range(5):
                if expires and registrar != self.registrar:
                    return 0, "moved", 0  # the phone moved meanwhile: never (re-)register at the old one
                self._cseq += 1
                branch = new_branch()
                data = (
                    f"REGISTER {ruri} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {lhost}:{lport};rport;branch={branch}\r\n"
                    f"Max-Forwards: 70\r\n"
                    f"From: <{aor}>;tag={self._from_tag}\r\n"
                    f"To: <{aor}>\r\n"
                    f"Call-ID: {call_id}\r\n"
                    f"CSeq: {self._cseq} REGISTER\r\n"
                    f"Contact: <{curi}>;expires={expires}\r\n"
                    f"Expires: {expires}\r\n"
                    f"{auth}"
                    f"Allow: {ALLOW}\r\n"
                    f"User-Agent: {ep.user_agent}\r\n"
                    f"Content-Length: 0\r\n\r\n"
                ).encode()
                fut = ep.request(data, registrar, branch, give_up=give_up)
                if expires:
                    self._inflight[fut] = registrar
                try:
                    resp = await fut
                finally:
                    self._inflight.pop(fut, None)
                if resp is None:
                    return 0, "timeout", 0
                st = resp.status
                if st == 401 or st == 407:
                    if answered_fresh:
                        got = self._take_challenge(resp, registrar)
                        if got is None or not got[1].stale:
                            return st, resp.reason, 0
                    else:
                        got = self._take_challenge(resp, registrar)
                        if got is None:
                            return st, resp.reason, 0
                    answered_fresh = True
                    hname, chal = got
                    auth = f"{hname}: {self._auth_header(chal, 'REGISTER', ruri)}\r\n"
                    continue
                if st == 423:
                    try:
                        expires = int(resp.get("min-expires", "") or "")
                    except ValueError:
                        return st, resp.reason, 0
                    continue
                if 200 <= st < 300:
                    return st, resp.reason, (expires and _granted(resp, curi, expires))
                return st, resp.reason, 0
            return 0, "too many challenges", 0
        finally:
            self._pending -= 1

    # ------------------------------------------------------------ incoming requests

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.endpoint.send(data, addr)

    def _tag_for(self, call_id: str) -> str:
        # Deterministic per Call-ID, so a retransmitted INVITE gets the same stateless answer.
        return f"{zlib.crc32(f'{call_id}|{self.contact_user}'.encode()):08x}"

    def _contact_hdr(self) -> str:
        ep = self.endpoint
        lhost = format_host(ep.contact_host(self.registrar[0]))
        return f"Contact: <sip:{self.contact_user}@{lhost}:{ep.local[1]}>\r\n"

    def _on_request(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        m = msg.method
        if m == "INVITE":
            self._on_invite(msg, addr)
        elif m == "ACK":
            self._on_ack(msg)
        elif m == "BYE":
            self._on_bye(msg, addr)
        elif m == "CANCEL":
            self._on_cancel(msg, addr)
        elif m == "OPTIONS":
            extra = f"Allow: {ALLOW}\r\nAccept: application/sdp\r\n{self._contact_hdr()}"
            self._send(
                build_response(
                    msg, 200, "OK", to_tag=self._tag_for(msg.call_id), extra=extra, server=self._ua()
                ),
                addr,
            )
        else:
            self._send(
                build_response(
                    msg,
                    405,
                    "Method Not Allowed",
                    to_tag=self._tag_for(msg.call_id),
                    extra=f"Allow: {ALLOW}\r\n",
                ),
                addr,
            )

    def _ua(self) -> str:
        return self.endpoint.user_agent

    def _on_invite(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        call = self._call
        to_tag = tag_of(msg.get("to"))
        if to_tag:  # re-INVITE (session refresh, hold): accept with the same SDP
            if call is not None and call.call_id == msg.call_id and call.local_tag == to_tag:
                self._send(self._ok_with_sdp(msg, call), addr)
            else:
                self._send(build_response(msg, 481, "Call/Transaction Does Not Exist"), addr)
            return
        if call is not None and call.call_id == msg.call_id:
            if call.last_resp is not None:  # retransmitted INVITE: repeat the last response
                self._send(call.last_resp, addr)
            return
        last = self._last_final
        if last is not None and last[0] == msg.call_id:  # retransmission of an INVITE already refused
            self._send(last[1], addr)
            return
        if call is not None or self.busy:
            self._send(
                build_response(msg, 486, "Busy Here", to_tag=self._tag_for(msg.call_id), server=self._ua()),
                addr,
            )
            return
        frm = msg.get("from", "") or ""
        call = _Call(msg.call_id, False, user_of(uri_of(frm)), self._tag_for(msg.call_id))
        call.invite = msg
        call.invite_addr = addr
        call.remote_hdr = frm
        call.local_hdr = f"{msg.get('to', '')};tag={call.local_tag}"
        contact = msg.get("contact")
        call.remote_target = uri_of(contact) if contact else uri_of(frm)
        call.routes = list(msg.all("record-route"))
        self._call = call
        self.endpoint._dialogs[call.call_id] = self
        self._send(build_response(msg, 100, "Trying"), addr)
        ringing = build_response(
            msg,
            180,
            "Ringing",
            to_tag=call.local_tag,
            extra=self._contact_hdr(),
            record_route=True,
            server=self._ua(),
        )
        call.last_resp = ringing
        call.alerting = True
        self._send(ringing, addr)
        self._emit("incoming_call", call_id=call.call_id, peer=call.peer)
        if self.auto_answer is not None:
            call.h_answer = self.endpoint.loop.call_later(self.auto_answer, self._answer_now, call)

    def _ok_with_sdp(self, msg: SipMessage, call: _Call) -> bytes:
        ep = self.endpoint
        lhost = ep.contact_host(self.registrar[0])
        sdp = minimal_sdp(
            lhost, 40000 + (zlib.crc32(self.contact_user.encode()) % 10000) * 2, call.local_cseq
        )
        return build_response(
            msg,
            200,
            "OK",
            to_tag=call.local_tag,
            extra=f"{self._contact_hdr()}Allow: {ALLOW}\r\n",
            body=sdp,
            record_route=True,
            server=self._ua(),
        )

    def answer(self) -> bool:
        """Answer the ringing incoming call now (when ``auto_answer`` is None); False if none."""
        call = self._call
        if call is None or call.outgoing or call.answered:
            return False
        self._answer_now(call)
        return True

    def _answer_now(self, call: _Call) -> None:
        call.h_answer = None
        if self._call is not call or call.answered or call.invite is None or call.invite_addr is None:
            return
        ok = self._ok_with_sdp(call.invite, call)
        call.last_resp = ok
        call.answered = True
        self._send(ok, call.invite_addr)
        # RFC 3261 13.3.1.4: retransmit the 2xx (T1 doubling to T2) until the ACK, give up at 64*T1.
        t = self.endpoint.timers
        call.retx_interval = t.t1
        loop = self.endpoint.loop
        call.h_retx = loop.call_later(self.endpoint.jittered(t.t1), self._retx_ok, call)
        call.h_dead = loop.call_later(t.timer_f, self._no_ack, call)

    def _retx_ok(self, call: _Call) -> None:
        if self._call is not call or call.confirmed or call.last_resp is None or call.invite_addr is None:
            return
        self._send(call.last_resp, call.invite_addr)
        self.endpoint.stats["retransmits"] += 1
        call.retx_interval = min(call.retx_interval * 2, self.endpoint.timers.t2)
        call.h_retx = self.endpoint.loop.call_later(
            self.endpoint.jittered(call.retx_interval), self._retx_ok, call
        )

    def _no_ack(self, call: _Call) -> None:
        call.h_dead = None
        if self._call is call and not call.confirmed:
            self.endpoint.spawn(self._send_bye(call))
            self._end_call("no_ack")

    def _on_ack(self, msg: SipMessage) -> None:
        call = self._call
        if call is None or call.call_id != msg.call_id or not call.answered or call.confirmed:
            return
        if call.outgoing:
            return
        call.confirmed = True
        call.cancel_timers()
        self._emit("call_answered", call_id=call.call_id, peer=call.peer, direction="incoming")

    def _on_bye(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        call = self._call
        if call is None or call.call_id != msg.call_id:
            self._send(build_response(msg, 481, "Call/Transaction Does Not Exist"), addr)
            return
        self._send(build_response(msg, 200, "OK", server=self._ua()), addr)
        self._end_call("remote_bye")

    def _on_cancel(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        call = self._call
        if (
            call is None
            or call.outgoing
            or call.call_id != msg.call_id
            or call.invite is None
            or msg.branch != call.invite.branch
        ):
            self._send(build_response(msg, 481, "Call/Transaction Does Not Exist"), addr)
            return
        self._send(build_response(msg, 200, "OK", to_tag=call.local_tag), addr)
        if not call.answered and call.invite_addr is not None:
            final = build_response(call.invite, 487, "Request Terminated", to_tag=call.local_tag)
            self._last_final = (call.call_id, final)
            self._send(final, call.invite_addr)
            self._end_call("cancelled")

    def _on_stray_response(self, msg: SipMessage) -> None:
        # A retransmitted 2xx to our INVITE (its transaction is gone): repeat the ACK.
        call = self._call
        if (
            call is not None
            and call.outgoing
            and call.ack is not None
            and 200 <= msg.status < 300
            and msg.call_id == call.call_id
            and msg.cseq[1] == "INVITE"
        ):
            self._send(call.ack, self._next_hop(call))

    def _end_call(self, reason: str, **detail: Any) -> None:
        call = self._call
        if call is None:
            return
        call.cancel_timers()
        self._call = None
        if self.endpoint._dialogs.get(call.call_id) is self:
            del self.endpoint._dialogs[call.call_id]
        self._emit(
            "call_ended",
            call_id=call.call_id,
            peer=call.peer,
            reason=reason,
            direction="outgoing" if call.outgoing else "incoming",
            duration=time.monotonic() - call.started,
            **detail,
        )

    # ------------------------------------------------------------ outgoing calls and hang-up

    def _next_hop(self, call: _Call) -> tuple[str, int]:
        if call.routes:
            return hostport_of(uri_of(call.routes[0]))
        return hostport_of(call.remote_target)

    def _in_dialog(self, call: _Call, method: str, cseq: int, branch: str) -> bytes:
        ep = self.endpoint
        lhost = format_host(ep.contact_host(self.registrar[0]))
        routes = "".join(f"Route: {r}\r\n" for r in call.routes)
        return (
            f"{method} {call.remote_target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {lhost}:{ep.local[1]};rport;branch={branch}\r\n"
            f"Max-Forwards: 70\r\n{routes}"
            f"From: {call.local_hdr}\r\nTo: {call.remote_hdr}\r\n"
            f"Call-ID: {call.call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"User-Agent: {ep.user_agent}\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    async def _send_bye(self, call: _Call) -> bool:
        call.local_cseq += 1
        branch = new_branch()
        data = self._in_dialog(call, "BYE", call.local_cseq, branch)
        resp = await self.endpoint.request(data, self._next_hop(call), branch)
        return resp is not None and 200 <= resp.status < 300

    async def call(self, target: str, *, ring_timeout: float = 30.0) -> bool:
        """Call extension ``target`` through the registrar; True once answered (ACK sent).

        Answers 401/407 challenges with the phone's credentials. False on rejection, timeout or if
        :meth:`hangup` cancelled it; a call is already up -> False without sending anything.
        """
        if self._call is not None:
            return False
        ep = self.endpoint
        host, port = self.registrar
        hp = format_host(host)
        lhost = format_host(ep.contact_host(host))
        lport = ep.local[1]
        dom = format_host(self.domain) if self.domain else hp
        call = _Call(f"{token(80)}@{lhost}", True, target, token(32))
        call.local_hdr = f"<sip:{self.extension}@{dom}>;tag={call.local_tag}"
        call.remote_hdr = f"<sip:{target}@{dom}>"
        call.invite_uri = f"sip:{target}@{hp}:{port}"
        self._call = call
        ep._dialogs[call.call_id] = self
        sdp = minimal_sdp(
            ep.contact_host(host),
            40000 + (zlib.crc32(self.contact_user.encode()) % 10000) * 2,
            call.local_cseq,
        )
        self._emit("outgoing_call", call_id=call.call_id, peer=target)
        auth = ""
        fresh = False

        def on_provisional(resp: SipMessage) -> None:
            if resp.status in (180, 183):
                call.alerting = True

        for _ in range(4):
            call.local_cseq += 1
            branch = new_branch()
            via = f"SIP/2.0/UDP {lhost}:{lport};rport;branch={branch}"
            call.invite_branch, call.invite_via, call.invite_cseq = branch, via, call.local_cseq
            data = (
                f"INVITE {call.invite_uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
                f"From: {call.local_hdr}\r\nTo: {call.remote_hdr}\r\n"
                f"Call-ID: {call.call_id}\r\nCSeq: {call.local_cseq} INVITE\r\n"
                f"Contact: <sip:{self.contact_user}@{lhost}:{lport}>\r\n{auth}"
                f"Allow: {ALLOW}\r\nUser-Agent: {ep.user_agent}\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
            ).encode() + sdp

            def make_ack(resp: SipMessage, _via: str = via, _cseq: int = call.local_cseq) -> bytes:
                return (
                    f"ACK {call.invite_uri} SIP/2.0\r\nVia: {_via}\r\nMax-Forwards: 70\r\n"
                    f"From: {call.local_hdr}\r\nTo: {resp.get('to', '')}\r\n"
                    f"Call-ID: {call.call_id}\r\nCSeq: {_cseq} ACK\r\nContent-Length: 0\r\n\r\n"
                ).encode()

            fut = ep.request(
                data,
                self.registrar,
                branch,
                invite=True,
                on_provisional=on_provisional,
                make_ack=make_ack,
                ring_timeout=ring_timeout,
            )
            call.invite_fut = fut
            try:
                resp = await fut
            except asyncio.CancelledError:
                resp = None
            if self._call is not call:
                return False
            if resp is None:
                if call.alerting:
                    self.endpoint.spawn(self._send_cancel(call))
                self._end_call("timeout")
                return False
            st = resp.status
            if st in (401, 407) and not (fresh and not self._is_stale(resp)):
                got = self._take_challenge(resp, self.registrar)
                if got is None:
                    self._end_call("rejected", code=st)
                    return False
                fresh = True
                hname, chal = got
                auth = f"{hname}: {self._auth_header(chal, 'INVITE', call.invite_uri)}\r\n"
                continue
            if 200 <= st < 300:
                call.remote_hdr = resp.get("to", "") or call.remote_hdr
                contact = resp.get("contact")
                call.remote_target = uri_of(contact) if contact else call.invite_uri
                call.routes = list(reversed(resp.all("record-route")))
                call.ack = self._in_dialog(call, "ACK", call.invite_cseq, new_branch())
                call.answered = call.confirmed = True
                call.invite_fut = None
                self._send(call.ack, self._next_hop(call))
                self._emit("call_answered", call_id=call.call_id, peer=target, direction="outgoing")
                return True
            self._end_call("rejected" if st != 487 else "cancelled", code=st)
            return False
        self._end_call("rejected", code=401)
        return False

    def _is_stale(self, resp: SipMessage) -> bool:
        name = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        chal = parse_challenge(resp.get(name, "") or "")
        return chal is not None and chal.stale

    async def _send_cancel(self, call: _Call) -> None:
        data = (
            f"CANCEL {call.invite_uri} SIP/2.0\r\nVia: {call.invite_via}\r\nMax-Forwards: 70\r\n"
            f"From: {call.local_hdr}\r\nTo: {call.remote_hdr}\r\nCall-ID: {call.call_id}\r\n"
            f"CSeq: {call.invite_cseq} CANCEL\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        await self.endpoint.request(data, self.registrar, call.invite_branch, cancel=True)

    async def hangup(self) -> bool:
        """End the call: reject if ringing in, CANCEL if dialling out, BYE if up. False if no call."""
        call = self._call
        if call is None:
            return False
        if not call.outgoing and not call.answered:
            if call.invite is not None and call.invite_addr is not None:
                final = build_response(call.invite, 603, "Decline", to_tag=call.local_tag)
                self._last_final = (call.call_id, final)
                self._send(final, call.invite_addr)
            self._end_call("rejected")
            return True
        if call.outgoing and not call.confirmed:
            await self._send_cancel(call)
            # The INVITE transaction now ends with 487 (ACKed by the transaction) and call() returns.
            if self._call is call:
                self._end_call("cancelled")
            return True
        self._end_call("local_bye")
        return await self._send_bye(call)


def _granted(resp: SipMessage, contact_uri: str, requested: int) -> int:
    """The expiry the registrar granted our contact (its Contact expires param, else Expires)."""
    for value in resp.all("contact"):
        for one in _split_commas(value):
            if contact_uri in one:
                exp = param(one, "expires")
                if exp:
                    try:
                        return int(exp)
                    except ValueError:
                        break
    exp_hdr = resp.get("expires")
    if exp_hdr:
        try:
            return int(exp_hdr)
        except ValueError:
            pass
    return requested
