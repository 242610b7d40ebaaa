"""The phones' shared UDP socket: one :class:`SipEndpoint` carries thousands of accounts.

Why one socket: the swarm runs 10,000 phones on one event loop; a socket each would cost a file descriptor,
a reader and a wake-up per phone. Responses are matched to client transactions by the top Via branch;
requests go to a phone by the Request-URI user (each phone's Contact has its own user part), falling back to
the Call-ID of a dialog the phone is in. The endpoint drains the socket in batches and flushes sends once
per loop iteration (see :meth:`SipEndpoint.send`); with that, the REGISTER rate is 0.7-0.95x SIPp's against
the same Kamailio on a 2-core host (bench/bench_register.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import zlib
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from sipcore.message import SipMessage, build_response, parse
from sipcore.uri import user_of
from stack.phone.account import ALLOW, USER_AGENT
from stack.phone.keepalive import RegistrarKeepalive
from stack.phone.transaction import ClientTransaction, SipTimers, TimerWheel

if TYPE_CHECKING:
    from stack.phone.ua import Phone

log = logging.getLogger("stack.phone")


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
        self.wheel = TimerWheel(self.loop)
        self.local: tuple[str, int] = ("", 0)
        self._tx: dict[str, ClientTransaction] = {}
        self._users: dict[str, Phone] = {}
        self._dialogs: dict[str, Phone] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rx_from: dict[tuple[str, int], int] = {}  # datagrams received, by source (the keep-alive)
        self.keepalive: RegistrarKeepalive | None = None
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
        ep.wheel = TimerWheel(loop)
        ep._sock = sock
        ep.local = sock.getsockname()[:2]
        loop.add_reader(sock.fileno(), ep._read_ready)
        return ep

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.loop = asyncio.get_running_loop()
        self.wheel = TimerWheel(self.loop)
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
        if self.keepalive is not None:
            self.keepalive.stop()
        for tx in list(self._tx.values()):
            tx.finish(None)
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
        if self.keepalive is None and self.timers.keepalive > 0:
            t = self.timers
            self.keepalive = RegistrarKeepalive(self, t.keepalive, t.keepalive_misses)
            self.keepalive.start()

    def heard_from(self, addr: tuple[str, int]) -> int:
        """How many datagrams came from ``addr`` so far (the keep-alive: any answer proves it alive)."""
        return self._rx_from.get(addr, 0)

    def detach(self, phone: Phone) -> None:
        if self._users.get(phone.contact_user) is phone:
            del self._users[phone.contact_user]

    @property
    def phones(self) -> list[Phone]:
        return list(self._users.values())

    def bind_dialog(self, call_id: str, phone: Phone) -> None:
        """Route in-dialog requests and stray responses with this Call-ID to ``phone``."""
        self._dialogs[call_id] = phone

    def unbind_dialog(self, call_id: str, phone: Phone) -> None:
        if self._dialogs.get(call_id) is phone:
            del self._dialogs[call_id]

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
        tx = ClientTransaction(self, key, data, dest, invite, on_provisional, make_ack, ring_timeout, give_up)
        self._tx[key] = tx
        return tx.fut

    def forget(self, tx: ClientTransaction) -> None:
        """Drop a finished transaction (a later one may have taken its key: leave that one)."""
        if self._tx.get(tx.key) is tx:
            del self._tx[tx.key]

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
        src = (addr[0], addr[1])
        rx = self._rx_from
        rx[src] = rx.get(src, 0) + 1
        try:
            msg = parse(data)
            if msg is None:
                self.stats["unparsable"] += 1
                return
            if msg.status:
                branch = msg.branch
                if branch:
                    tx = self._tx.get("C" + branch if msg.method == "CANCEL" else branch)
                    if tx is not None:
                        tx.on_response(msg)
                        return
                phone = self._dialogs.get(msg.call_id)
                if phone is not None:
                    phone._on_stray_response(msg)
                else:
                    self.stats["unmatched"] += 1
                return
            user = user_of(msg.uri)
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
        if msg.method == "OPTIONS" and not user_of(msg.uri):
            resp = build_response(msg, 200, "OK", to_tag=tag, extra=f"Allow: {ALLOW}\r\n")
        else:
            resp = build_response(msg, 404, "Not Found", to_tag=tag)
        self.send(resp, (addr[0], addr[1]))
