"""An attacker's flood from one lab host: slow clients and garbage against HTTP, CTI and SIP services.

Why a process of its own: the flood must come from the attacker's host (its network namespace, its
address), last exactly as long as the fault that started it, and be stopped by PID, so the harness's
`flood` fault (harness/faults/flood.py) starts this module inside the host with ``nsenter`` and SIGTERMs
it at the heal. It imports nothing of the harness and prints JSON lines: ``{"ready": ...}`` once every
slow client has tried its first connection, ``{"progress": ...}`` (counters per target) every
``--progress`` seconds, and ``{"summary": ...}`` (the same counters) when it ends.

Two floods at once, against every ``--target KIND=HOST:PORT`` (KIND: http, cti, sip):

- slow clients: ``--slow`` connections per target, each sending one byte of a message that never ends
  every ``--every`` seconds (the slowloris pattern); a connection the server closes is opened again;
  and ``--idle`` connections per TCP target that send nothing at all (what an idle deadline must cut);
- garbage: ``--rate`` malformed messages per second over all targets (random bytes, lines that are not
  JSON, JSON that is no CTI message, broken HTTP, broken SIP over UDP and TCP), each on a connection that
  is opened again whenever the server closes it.

Every socket is bound to a source port of ``--ports LO-HI`` (below the kernel's ephemeral range), so the
flood's streams can be told from the real clients' on the wire, and closed with a reset (SO_LINGER 0):
a port is free again at once. ``--max-seconds`` ends the flood by itself if nobody stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import random
import resource
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["KINDS", "Ports", "Target", "garbage", "main", "parse_ports", "parse_target", "slow_prefix"]

KINDS = ("http", "cti", "sip")
DEFAULT_PORTS = (20000, 29999)  # below Linux's ephemeral range (32768-60999): no real client uses them
GARBAGE_WORKERS = 2  # connections per TCP target carrying garbage
CONNECT_TIMEOUT = 3.0
LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class Target:
    """One service the flood hits: its protocol and address."""

    kind: str
    host: str
    port: int

    @property
    def name(self) -> str:
        return f"{self.kind}={self.host}:{self.port}"


def parse_target(text: str) -> Target:
    """``cti=198.18.2.20:7000`` -> Target('cti', '198.18.2.20', 7000)."""
    kind, sep, addr = text.partition("=")
    host, _, port = addr.rpartition(":")
    if not sep or kind not in KINDS or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"target {text!r}: want KIND=HOST:PORT with KIND one of {', '.join(KINDS)}")
    return Target(kind, host, int(port))


def parse_ports(text: str) -> tuple[int, int]:
    """``20000-29999`` -> (20000, 29999)."""
    lo, _, hi = text.partition("-")
    a, b = int(lo), int(hi or lo)
    if not 1024 <= a <= b <= 65535:
        raise ValueError(f"port range {text!r}: want LO-HI within 1024-65535")
    return a, b


# -- what is sent ------------------------------------------------------------------------------------


def _random_bytes(rng: random.Random, n: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


def _sip_head(method: str, rng: random.Random) -> bytes:
    tag = rng.getrandbits(32)
    return (
        f"{method} sip:9{tag % 10000:04d}@lab SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 198.18.0.1;branch=z9hG4bK{tag:x}\r\n"
        f"From: <sip:x@lab>;tag={tag:x}\r\nTo: <sip:y@lab>\r\nCall-ID: {tag:x}@flood\r\n"
    ).encode()


def garbage(kind: str, rng: random.Random) -> bytes:
    """One malformed message for a service of ``kind``: something its parser must refuse cleanly."""
    n = rng.randint(8, 200)
    if kind == "cti":
        choices = [
            _random_bytes(rng, n).replace(b"\n", b" ") + b"\n",  # bytes that are no text at all
            b"this is not json " + str(rng.random()).encode() + b"\n",
            b"[1, 2, 3]\n",
            b'{"type": 7}\n',
            b'{"type": "no_such_type", "id": ' + str(rng.getrandbits(16)).encode() + b"}\n",
            b'{"type": "login", "agent": ["a"], "token": 5}\n',
            b"{{{{" + b"[" * 50 + b"\n",
            b'{"type": "heartbeat", "pad": "' + b"x" * rng.randint(100, 2000) + b'"\n',
        ]
    elif kind == "http":
        choices = [
            _random_bytes(rng, n) + b"\r\n\r\n",
            b"GARBAGE / HTTP/1.1\r\n\r\n",
            b"POST /v1/login HTTP/1.1\r\nHost: ul\r\nContent-Length: -5\r\n\r\n",
            b"POST /v1/login HTTP/1.1\r\nHost: ul\r\nContent-Length: 9\r\n\r\n{not json",
            b"POST /v1/rules HTTP/1.1\r\nHost: ul\r\nX-Hil-Time: \xff\xfe\r\nX-Hil-Sig: \xe2\x82\xac\r\n"
            b"Content-Length: 2\r\n\r\n{}",
            b"GET /v1/epoch/" + b"%" * rng.randint(1, 300) + b" HTTP/1.1\r\nHost: ul\r\n\r\n",
            b"GET / HTTP/9.9\r\n" + b"X: " + b"y" * rng.randint(10, 3000) + b"\r\n\r\n",
        ]
    elif kind == "sip":  # each under 1,200 bytes: a datagram is never fragmented (its ports in every packet)
        choices = [
            _random_bytes(rng, n),
            b"NOT SIP AT ALL " + str(rng.random()).encode() + b"\r\n\r\n",
            _sip_head("REGISTER", rng) + b"CSeq: " + b"9" * rng.randint(20, 900) + b" REGISTER\r\n\r\n",
            _sip_head("INVITE", rng) + b"CSeq: 1 INVITE\r\nContent-Length: 99999\r\n\r\nv=0",
            _sip_head("OPTIONS", rng) + b"Max-Forwards: \xff\xfe\r\n\r\n",
            b"SIP/2.0 999\r\n\r\n",
        ]
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return rng.choice(choices)


def slow_prefix(kind: str) -> Iterator[bytes]:
    """The bytes a slow client trickles, one at a time: a message head that never completes (after the
    head, filler inside one header value or one JSON string, so no terminator ever comes)."""
    head = {
        "http": b"POST /v1/login HTTP/1.1\r\nHost: ul\r\nContent-Type: application/json\r\nX-Slow: ",
        "cti": b'{"type": "login", "id": 1, "agent": "a99999", "token": "',
        "sip": b"REGISTER sip:lab SIP/2.0\r\nVia: SIP/2.0/TCP 198.18.0.1;branch=z9hG4bKslow\r\nX-Slow: ",
    }[kind]
    yield from (head[i : i + 1] for i in range(len(head)))
    while True:
        yield b"a"


# -- sockets -----------------------------------------------------------------------------------------


class Ports:
    """Source ports handed out in turn from a range; a port in use is skipped."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self._next = lo

    def bind(self, sock: socket.socket) -> int:
        for _ in range(self.hi - self.lo + 1):
            port = self._next
            self._next = self.lo if port >= self.hi else port + 1
            try:
                sock.bind(("", port))
                return port
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, f"no free source port in {self.lo}-{self.hi}")


class Flood:
    """The running flood: its counters per target, its stop event."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.targets: list[Target] = args.target
        self.args = args
        self.ports = Ports(*args.ports)
        self.rng = random.Random(args.seed)
        self.stop = asyncio.Event()
        self.stats = {t.name: dict.fromkeys(_COUNTERS, 0) for t in self.targets}
        self.queues = {t.name: asyncio.Queue[bytes](maxsize=64) for t in self.targets}

    async def connect(self, t: Target) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            self.ports.bind(s)
            connecting = asyncio.get_running_loop().sock_connect(s, (t.host, t.port))
            await asyncio.wait_for(connecting, CONNECT_TIMEOUT)
            return s
        except BaseException:
            s.close()
            raise

    async def _recv(self, s: socket.socket, timeout: float) -> bytes | None:
        """What the server sent within ``timeout`` (b"" when it closed), None when it said nothing."""
        try:
            return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(s, 65536), timeout)
        except TimeoutError:
            return None
        except OSError:
            return b""

    async def slow(self, t: Target, first: asyncio.Future[None]) -> None:
        st = self.stats[t.name]
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            try:
                s = await self.connect(t)
            except (OSError, TimeoutError):
                st["slow_connect_failed"] += 1
                _settle(first)
                await self._pause(self.args.every)
                continue
            _settle(first)
            st["slow_opened"] += 1
            st["slow_open"] += 1
            try:
                for byte in slow_prefix(t.kind):
                    await loop.sock_sendall(s, byte)
                    got = await self._recv(s, self.args.every)
                    if got == b"":
                        st["slow_closed_by_server"] += 1
                        break
                    if got:
                        st["slow_replies"] += 1
                    if self.stop.is_set():
                        break
            except OSError:
                st["slow_closed_by_server"] += 1
            finally:
                st["slow_open"] -= 1
                s.close()

    async def idle(self, t: Target) -> None:
        """A connection that never sends a byte, opened again whenever the server closes it."""
        st = self.stats[t.name]
        while not self.stop.is_set():
            try:
                s = await self.connect(t)
            except (OSError, TimeoutError):
                st["idle_connect_failed"] += 1
                await self._pause(self.args.every)
                continue
            st["idle_opened"] += 1
            try:
                while not self.stop.is_set():
                    got = await self._recv(s, 1.0)
                    if got == b"":
                        st["idle_closed_by_server"] += 1
                        break
            finally:
                s.close()

    async def garbage_worker(self, t: Target) -> None:
        st, q = self.stats[t.name], self.queues[t.name]
        loop = asyncio.get_running_loop()
        s: socket.socket | None = None
        try:
            while not self.stop.is_set():
                msg = await q.get()
                try:
                    if s is None:
                        s = await self.connect(t)
                    await loop.sock_sendall(s, msg)
                    st["garbage_sent"] += 1
                    got = await self._recv(s, 0.05)
                    if got:
                        st["garbage_replies"] += 1
                    if got == b"":
                        st["garbage_closed_by_server"] += 1
                        s.close()
                        s = None
                except (OSError, TimeoutError):
                    st["garbage_connect_failed"] += 1
                    if s is not None:
                        s.close()
                        s = None
        finally:
            if s is not None:
                s.close()

    async def udp(self, t: Target) -> None:
        """SIP garbage over UDP: datagrams sent at the rate the scheduler hands them out."""
        st, q = self.stats[t.name], self.queues[t.name]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        self.ports.bind(s)
        try:
            while not self.stop.is_set():
                msg = await q.get()
                with contextlib.suppress(OSError):
                    s.sendto(msg, (t.host, t.port))
                    st["garbage_sent_udp"] += 1
        finally:
            s.close()

    async def schedule(self) -> None:
        """Hand out ``--rate`` garbage messages per second, to each target in turn (a full queue: skipped)."""
        if self.args.rate <= 0:
            return
        period, i, t0 = 1.0 / self.args.rate, 0, time.monotonic()
        while not self.stop.is_set():
            t = self.targets[i % len(self.targets)]
            try:
                self.queues[t.name].put_nowait(garbage(t.kind, self.rng))
            except asyncio.QueueFull:
                self.stats[t.name]["garbage_skipped"] += 1
            i += 1
            await self._pause(t0 + i * period - time.monotonic())

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), seconds)

    async def run(self) -> dict[str, object]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        t0 = time.monotonic()
        firsts: list[asyncio.Future[None]] = []
        tasks = []
        for t in self.targets:
            for _ in range(self.args.slow):
                firsts.append(loop.create_future())
                tasks.append(asyncio.create_task(self.slow(t, firsts[-1])))
            for _ in range(self.args.idle):
                tasks.append(asyncio.create_task(self.idle(t)))
            for _ in range(GARBAGE_WORKERS):
                tasks.append(asyncio.create_task(self.garbage_worker(t)))
            if t.kind == "sip":  # SIP takes garbage over UDP too: one queue, both transports draw from it
                tasks.append(asyncio.create_task(self.udp(t)))
        tasks.append(asyncio.create_task(self.schedule()))
        if firsts:
            await asyncio.wait(firsts, timeout=CONNECT_TIMEOUT + 1)
        opened = sum(s["slow_open"] for s in self.stats.values())
        _emit({"ready": True, "pid": os.getpid(), "slow_open": opened})
        end = t0 + self.args.max_seconds
        while not self.stop.is_set() and time.monotonic() < end:
            await self._pause(min(self.args.progress, end - time.monotonic()))
            _emit({"progress": self.stats, "seconds": round(time.monotonic() - t0, 3)})
        self.stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return {"summary": self.stats, "seconds": round(time.monotonic() - t0, 3)}


_COUNTERS = (
    "slow_open",
    "slow_opened",
    "slow_connect_failed",
    "slow_closed_by_server",
    "slow_replies",
    "idle_opened",
    "idle_closed_by_server",
    "idle_connect_failed",
    "garbage_sent",
    "garbage_sent_udp",
    "garbage_replies",
    "garbage_closed_by_server",
    "garbage_connect_failed",
    "garbage_skipped",
)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.tools.flood", description=__doc__.splitlines()[0])
    p.add_argument("--target", type=parse_target, action="append", required=True, help="KIND=HOST:PORT")
    p.add_argument("--slow", type=int, default=50, help="slow connections per target")
    p.add_argument("--idle", type=int, default=0, help="idle connections per target (never a byte)")
    p.add_argument("--every", type=float, default=3.0, help="seconds between a slow client's bytes")
    p.add_argument("--rate", type=float, default=200.0, help="garbage messages per second, all targets")
    p.add_argument("--ports", type=parse_ports, default=DEFAULT_PORTS, help="source ports LO-HI")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=120.0, help="end by itself after this long")
    p.add_argument("--progress", type=float, default=1.0, help="seconds between progress lines")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    need = len(args.target) * (args.slow + args.idle + GARBAGE_WORKERS + 1) + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    _emit(asyncio.run(Flood(args).run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
