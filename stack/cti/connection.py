"""One client connection of the CTI: newline-delimited JSON in, replies and pushed events out.

Why it is built this way: one asyncio process serves every agent of a site (5,000 connections and more), so
a connection is an ``asyncio.Protocol`` with no task of its own, a malformed or oversized line costs only
its own connection, and a client that stops reading is cut before it costs the server memory. Anyone on
the data network can connect, so what a connection may hold is bounded (issue 16): connections per source
and in total (refused with one error line), time without logging in, line length, unread output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any, Protocol

from stack.common.limits import ConnectionCaps, Refusals, source_of
from stack.cti import protocol as P
from stack.cti.sessions import Session

log = logging.getLogger("stack.cti")
# The refusal's message by cap (the code is ``too_many_connections``, docs/cti-protocol.md).
REFUSED = {
    "per_source": "too many connections from this address; the connection is closed",
    "total": "too many connections to this CTI; the connection is closed",
}


class Server(Protocol):
    """What a connection needs of its CTI server (stack/cti/server.py)."""

    site: str
    max_errors: int
    sessions: dict[str, Session]
    conns: set[Connection]
    caps: ConnectionCaps
    refusals: Refusals
    max_line: int  # bytes of one line (P.MAX_LINE unless configured)
    login_timeout: float  # seconds a connection may stay silent without logging in (0: no limit)
    stall_timeout: float  # seconds a client may leave our output unread before it is cut (0: no limit)

    def _renew(self, s: Session, req: dict[str, Any]) -> bool: ...

    def lost(self, s: Session) -> None: ...

    def _handle_now(self, conn: Connection, req: dict[str, Any], kind: Any) -> dict[str, Any] | None: ...

    def _login(self, conn: Connection, req: dict[str, Any]) -> Awaitable[dict[str, Any]]: ...

    def _link(self, conn: Connection, req: dict[str, Any]) -> Awaitable[dict[str, Any]]: ...


class Connection(asyncio.Protocol):
    """One client TCP connection, served as an ``asyncio.Protocol`` (no reader task, no streams: at 10,000
    agents the stream reader/writer machinery was a quarter of a surviving CTI's CPU in a failover storm).

    Lines are split in ``data_received`` and handled one after another, in order. Most messages are
    answered right there, synchronously; ``login`` and ``link_phone`` await I/O (the UL epoch check, the
    PBX lookup) and run as a task, and while one does, what the client sends next waits unparsed in
    ``_buf``, handled when it completes (a message is never handled before the previous one is answered).
    Writes never block the server: a client that stops reading is not read either (its requests wait
    while the transport's write buffer is above its high-water mark, as ``drain()`` did) and is cut when
    the buffer passes HIGH_WATER (pushed events keep coming), or when it has read nothing of it for
    ``stall_timeout`` s (one reply bigger than HIGH_WATER, a ``sessions`` of 10,000, must not stay held
    by a client that never reads): cut means aborted, so the unsent bytes are freed at once. Reading
    pauses when more than PENDING_MAX unhandled bytes wait (a client flooding while its login is in
    flight), so memory stays bounded.

    Before its login a connection is a stranger's: it is refused beyond the caps per source and in total
    (one ``too_many_connections`` line), and closed with ``login_timeout`` after ``login_timeout`` s
    without a line (a client retrying a ``not_yet`` login sends one every few seconds, a slowloris none)
    unless it logs in or proves itself with a signed admin message (the UL's persistent connection)."""

    HIGH_WATER = 256 * 1024
    PENDING_MAX = 4 * P.MAX_LINE  # unhandled bytes held while a handler awaits, before reading pauses

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.session: Session | None = None
        self.admin = False  # a signed admin message was accepted on it
        self.errors = 0
        self.closed = False
        self.source = ""  # the peer's address (set by connection_made)
        self.admitted = False  # counted in the server's caps (released when lost)
        self.heard = 0.0  # monotonic time of the last line before login
        self._login_timer: asyncio.TimerHandle | None = None  # until it logs in (or a refusal's linger)
        self._stall_timer: asyncio.TimerHandle | None = None  # while its output waits unread
        self._lingering = False  # refused: waits for its client to read the refusal
        self._buf = b""  # bytes not handled yet: a partial line, or (while blocked) whole lines as well
        self._task: asyncio.Task[None] | None = None  # the awaiting handler in progress (login, link_phone)
        self._wpaused = False  # the transport's write buffer is above its high-water mark
        self._rpaused = False  # we paused reading (too many bytes waiting)
        self._eof = False  # the client sent EOF: close once what it sent before is answered

    # ---- the public surface the rest of the server uses -------------------------------------------

    def send(self, msg: dict[str, Any]) -> None:
        """Write one message, stamped ``at`` (this CTI's wall clock, ms, when written): what it wrote before
        a hang can reach the wire long after (TCP holds it back under loss), and only the stamp tells a
        capture when the CTI said it (harness/observe/wire.py)."""
        if self.closed:
            return
        msg["at"] = int(time.time() * 1000)
        # The buffer can only pass HIGH_WATER above the transport's own high-water mark (paused).
        if self._wpaused and self.transport.get_write_buffer_size() > self.HIGH_WATER:
            self._cut("slow_reader")
            return
        self.transport.write(P.encode(msg))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                with contextlib.suppress(Exception):
                    self.transport.close()

    # ---- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        srv = self.server
        self.source = source_of(transport)
        why = srv.caps.admit(self.source)
        if why is not None:
            self._refuse(why)
            return
        self.admitted = True
        srv.conns.add(self)
        if srv.login_timeout > 0:
            self.heard = time.monotonic()
            self._login_timer = asyncio.get_running_loop().call_later(srv.login_timeout, self._login_due)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for timer in (self._login_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._login_timer = self._stall_timer = None
        if self.admitted:
            self.admitted = False
            self.server.caps.release(self.source)
            self._drop()  # a login still in flight drops its session again when it completes
        elif self._lingering:
            self._lingering = False
            self.server.caps.unlinger()

    def pause_writing(self) -> None:
        self._wpaused = True
        # Armed even once closed: a close waits for the client to read what is buffered, maybe forever.
        if self.server.stall_timeout > 0 and self._stall_timer is None:
            loop = asyncio.get_running_loop()
            self._stall_timer = loop.call_later(self.server.stall_timeout, self._stalled)

    def resume_writing(self) -> None:
        self._wpaused = False
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self._resume()

    def eof_received(self) -> bool:
        if not self.admitted:
            return False  # refused: its client read the refusal and is done (the transport closes)
        self._eof = True
        if self._task is None and not self._wpaused:
            self._at_eof()
        return True  # half-open: the transport stays until the lines sent before EOF are answered

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._task is not None or self._wpaused:
            self._hold(data)
            return
        buf = self._buf + data if self._buf else data
        if b"\n" not in data:  # ``_buf`` holds no newline here: no whole line yet
            if len(buf) > self.server.max_line:
                self._too_large()
            else:
                self._buf = buf
            return
        self._buf = b""
        self._feed(buf)

    # ---- lines ------------------------------------------------------------------------------------------

    def _hold(self, data: bytes) -> None:
        """Keep ``data`` for after the handler in progress (or the write pause); pause reading when much
        waits."""
        self._buf += data
        if not self._rpaused and len(self._buf) > self.PENDING_MAX:
            self._rpaused = True
            self.transport.pause_reading()

    def _feed(self, buf: bytes) -> None:
        """Handle the whole lines in ``buf`` in order; stop (keeping the rest) when one starts an awaiting
        handler or the write side is paused."""
        lines = buf.split(b"\n")
        rest = lines.pop()
        for i, line in enumerate(lines):
            self._line(line)
            if self.closed:
                self._drop()  # ended by its own message (logout, too many errors): as ``_serve`` did
                return
            if self._task is not None or self._wpaused:
                tail = lines[i + 1 :]
                self._hold(b"\n".join(tail) + b"\n" + rest if tail else rest)
                return
        if len(rest) > self.server.max_line:
            self._too_large()
        else:
            self._buf = rest

    def _resume(self) -> None:
        """The handler in progress finished or the write side drained: handle what waited."""
        if self.closed or self._task is not None or self._wpaused:
            return
        buf, self._buf = self._buf, b""
        if b"\n" in buf:
            self._feed(buf)
        elif len(buf) > self.server.max_line:
            self._too_large()
        else:
            self._buf = buf
        if self.closed or self._task is not None or self._wpaused:
            return
        if self._rpaused:
            self._rpaused = False
            self.transport.resume_reading()
        if self._eof:
            self._at_eof()

    def _at_eof(self) -> None:
        """EOF with nothing in progress: a last unterminated line is handled (as ``readline`` returned
        it), then the connection ends."""
        rest, self._buf = self._buf, b""
        if rest and not self.closed:
            self._line(rest)
        if self._task is None and not self._wpaused:
            s = self.session
            if s is not None and self.server.sessions.get(s.agent) is s:
                # Its session ends with the connection: say so on the wire, or a login its client had given
                # up on (answered after a hang, the client gone) would look active until the next read of
                # the table (explore seed 2: both CTIs hung 12 s, the agent logged in at the other site).
                self.send({"type": "event", "event": "ended", "reason": "eof"})
            self._end()

    def _too_large(self) -> None:
        self._buf = b""
        self.server.refusals.note("too_large", self.source, f"a line over {self.server.max_line} bytes")
        self.send(P.error("too_large"))
        self._end()

    # ---- limits (issue 16): refusal, login timeout, stalled reader -------------------------------------

    def _refuse(self, why: str) -> None:
        """Beyond a cap: one error line, then FIN; the client gets ``LINGER`` s to read it (closing with
        its request unread would reset the connection and lose the line), or none when many linger."""
        self.closed = True  # nothing it sends is handled
        t = self.transport
        with contextlib.suppress(Exception):
            err = P.error("too_many_connections", reason=why, message=REFUSED[why])
            t.write(P.encode({**err, "at": int(time.time() * 1000)}))
            t.write_eof()
        wait = self.server.caps.linger()
        if wait <= 0:
            t.close()
        else:
            self._lingering = True
            self._login_timer = asyncio.get_running_loop().call_later(wait, t.abort)

    def _login_due(self) -> None:
        """The login timer: a connection silent for ``login_timeout`` s without a session is closed."""
        self._login_timer = None
        srv = self.server
        if self.closed or self.session is not None or self.admin:
            return  # logged in (a session that ends closes its connection) or gone: the timer is done
        left = self.heard + srv.login_timeout - time.monotonic()
        if left > 0 or self._task is not None or self._wpaused:
            # heard from lately, a login in flight, or its output waits unread (the stall timer's case)
            delay = left if left > 0 else srv.login_timeout
            self._login_timer = asyncio.get_running_loop().call_later(delay, self._login_due)
            return
        srv.refusals.note("login_timeout", self.source, f"silent {srv.login_timeout:g} s without a login")
        self.send(P.error("login_timeout", message=f"no login after {srv.login_timeout:g} s; closed"))
        self._end()

    def _stalled(self) -> None:
        self._stall_timer = None
        if self._wpaused:
            self._cut("stalled")

    def _cut(self, why: str) -> None:
        """A client that does not read what it is sent: aborted, so its unsent bytes are freed now (a close
        would keep them until it reads, which it may never do)."""
        self.server.refusals.note(why, self.source, f"{self.transport.get_write_buffer_size()} bytes unread")
        self.closed = True
        self._drop()
        with contextlib.suppress(Exception):
            self.transport.abort()

    def _end(self) -> None:
        """The connection is done on our side: its session ends now (as ``_serve``'s ``finally`` did)."""
        self._drop()
        self.close()

    def _drop(self) -> None:
        srv = self.server
        s = self.session
        if s is not None:
            srv.lost(s)
        srv.conns.discard(self)

    def _line(self, line: bytes) -> None:
        """One line: decoded and handled at once, or handed to a task when its handler awaits."""
        srv = self.server
        if len(line) > srv.max_line:
            self._too_large()
            return
        if not line or line.isspace():
            return
        if self.session is None:
            self.heard = time.monotonic()
        try:
            req = P.decode(line)
        except ValueError:
            self.errors += 1
            self.send(P.error("bad_json"))
            if self.errors >= srv.max_errors:
                self._end()
            return
        kind = req.get("type")
        if self.session is not None and kind != "logout" and not srv._renew(self.session, req):
            return  # its lease ran out while this message waited: the session is over, the connection closed
        if kind == "login" or kind == "link_phone":
            self._task = asyncio.get_running_loop().create_task(self._awaiting(req, kind))
            return
        try:
            reply = srv._handle_now(self, req, kind)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            self._bad_request(req, err)
            return
        except Exception:
            log.exception("cti %s: handling %r", srv.site, kind)
            self._end()
            return
        if reply is not None:
            if kind == "admin" and reply.get("type") == "admin_ok":
                self.admin = True  # signed with the lab secret: no stranger (no login timeout)
            self.send(reply)

    def _bad_request(self, req: dict[str, Any], err: Exception) -> None:
        self.errors += 1
        self.send(P.error("bad_request", req, detail=str(err)[:200]))
        if self.errors >= self.server.max_errors:
            self._end()

    async def _awaiting(self, req: dict[str, Any], kind: str) -> None:
        """``login`` or ``link_phone``; then what the client sent meanwhile."""
        srv = self.server
        try:
            if kind == "login":
                reply = await srv._login(self, req)
            else:
                reply = await srv._link(self, req)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            self._task = None
            self._bad_request(req, err)
        except Exception:
            self._task = None
            log.exception("cti %s: handling %r", srv.site, kind)
            self._end()
        else:
            self._task = None
            self.send(reply)
        if self.closed:
            self._drop()  # closed or lost meanwhile: a session this login made must not outlive it
            return
        self._resume()
