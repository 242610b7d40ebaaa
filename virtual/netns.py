"""Entering network namespaces from Python, one thread at a time.

A socket belongs to the namespace of the thread that created it, and setns(CLONE_NEWNET) moves only the
calling thread. So one process (the lab keeper, or the controller in a test) can open listeners and
clients in any lab namespace without a helper process per namespace. Python 3.11 has no os.setns; libc's is
called through ctypes.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()

IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered(ns_path: str | None) -> Iterator[None]:
    """Run the block with this thread in the namespace at ns_path (None: stay where we are)."""
    if ns_path is None:
        yield
        return
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(ns_path, os.O_RDONLY)
    try:
        _setns(there)
        try:
            yield
        finally:
            _setns(here)
    finally:
        os.close(there)
        os.close(here)


def socket_in(
    ns_path: str | None, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM
) -> socket.socket:
    """A socket created inside the namespace; it stays there whatever thread uses it later."""
    with entered(ns_path):
        return socket.socket(family, type)


def listener_in(ns_path: str | None, address: str, port: int, backlog: int = 64) -> socket.socket:
    sock = socket_in(ns_path, socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(backlog)
    return sock


def nsenter_argv(ns_path: str) -> list[str]:
    """Prefix that runs a command inside the namespace (for processes, where threads will not do)."""
    return ["nsenter", f"--net={ns_path}", "--"]


def run_in(ns_path: str | None, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    full = (nsenter_argv(ns_path) if ns_path else []) + argv
    return subprocess.run(full, capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def _ifreq(name: str, flags: int = 0) -> bytes:
    return struct.pack("16sH14s", name.encode(), flags, b"\0" * 14)


def link_flags(ifname: str, ns_path: str | None = None) -> int:
    with entered(ns_path):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        res = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, _ifreq(ifname))
    finally:
        s.close()
    flags = struct.unpack("16sH14s", res)[1]
    # SIOCGIFFLAGS returns only the low 16 bits; carrier comes from sysfs-free RUNNING
    return flags


def link_exists(ifname: str, ns_path: str | None = None) -> bool:
    try:
        link_flags(ifname, ns_path)
        return True
    except OSError:
        return False


def link_state(ifname: str, ns_path: str | None = None) -> tuple[bool, bool]:
    """(administratively up, carrier): what a switch shows as enabled/disabled and connected/notconnect."""
    flags = link_flags(ifname, ns_path)
    return bool(flags & IFF_UP), bool(flags & IFF_RUNNING)


def set_link(ifname: str, up: bool, ns_path: str | None = None) -> None:
    with _lock, entered(ns_path):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, _ifreq(ifname))
            flags = struct.unpack("16sH14s", res)[1]
            flags = (flags | IFF_UP) if up else (flags & ~IFF_UP)
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, _ifreq(ifname, flags & 0xFFFF))
        finally:
            s.close()
