"""Capture files as frames: classic pcap (either byte order, micro- or nanosecond timestamps) and pcapng.

The readers yield offsets into one buffer (an mmap) instead of slices, so that no packet is copied before the
decoder knows it wants it: a 1,000-agent failover gives hundreds of thousands of frames.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_LOOP",
    "LINKTYPE_NULL",
    "LINKTYPE_RAW",
    "DecodeError",
    "Frame",
    "iter_frames",
]

# Link types (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276


class DecodeError(Exception):
    """The file is not a capture this module can read."""


# (frame number, time, link type, buffer, start, end, original length)
Frame = tuple[int, float, int, Any, int, int, int]


def iter_frames(buf: Any) -> Iterator[Frame]:
    """Frames of a classic pcap or a pcapng held in ``buf`` (bytes or mmap)."""
    if len(buf) < 4:
        raise DecodeError("file too short for a capture header")
    magic = bytes(buf[:4])
    if magic == b"\x0a\x0d\x0d\x0a":
        return _iter_pcapng(buf)
    return _iter_pcap(buf)


_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}


def _iter_pcap(buf: Any) -> Iterator[Frame]:
    magic = bytes(buf[:4])
    if magic not in _PCAP_MAGIC or len(buf) < 24:
        raise DecodeError(f"not a pcap or pcapng file (magic {magic.hex()})")
    endian, scale = _PCAP_MAGIC[magic]
    (network,) = struct.unpack_from(endian + "I", buf, 20)
    linktype = network & 0xFFFF  # the upper bits may carry FCS information
    rec = struct.Struct(endian + "IIII").unpack_from
    size = len(buf)
    off = 24
    n = 0
    while off + 16 <= size:
        sec, frac, incl, orig = rec(buf, off)
        off += 16
        end = off + incl
        if end > size:  # cut short (capture still being written, or killed): stop at the last whole frame
            break
        n += 1
        yield n, sec + frac * scale, linktype, buf, off, end, orig
        off = end


def _iter_pcapng(buf: Any) -> Iterator[Frame]:
    size = len(buf)
    off = 0
    endian = "<"
    interfaces: list[tuple[int, float, int]] = []  # linktype, seconds per tick, snaplen
    n = 0
    while off + 12 <= size:
        btype_raw = bytes(buf[off : off + 4])
        if btype_raw == b"\x0a\x0d\x0d\x0a":  # section header: byte order may change per section
            bom = bytes(buf[off + 8 : off + 12])
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            interfaces = []
        btype, blen = struct.unpack_from(endian + "II", buf, off)
        if blen < 12 or off + blen > size:
            break
        body = off + 8
        if btype == 1:  # interface description
            lt, _reserved, snap = struct.unpack_from(endian + "HHI", buf, body)
            interfaces.append((lt, _pcapng_tsresol(buf, endian, body + 8, off + blen - 4), snap))
        elif btype == 6:  # enhanced packet
            ifid, hi, lo, incl, orig = struct.unpack_from(endian + "IIIII", buf, body)
            if ifid < len(interfaces):
                lt, tick, _snap = interfaces[ifid]
                start = body + 20
                n += 1
                yield n, ((hi << 32) | lo) * tick, lt, buf, start, start + incl, orig
        elif btype == 3 and interfaces:  # simple packet
            (orig,) = struct.unpack_from(endian + "I", buf, body)
            lt, _tick, snap = interfaces[0]
            incl = min(orig, snap) if snap else orig
            start = body + 4
            n += 1
            yield n, 0.0, lt, buf, start, start + incl, orig
        off += blen


def _pcapng_tsresol(buf: Any, endian: str, off: int, end: int) -> float:
    """Seconds per timestamp tick from an interface's options (default microseconds)."""
    while off + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", buf, off)
        if code == 0:
            break
        if code == 9 and length >= 1:
            v = buf[off + 4]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
        off += 4 + ((length + 3) & ~3)
    return 1e-6
