"""Capture files as frames: classic pcap (either byte order, micro- or nanosecond timestamps) and pcapng.

The readers yield offsets into one buffer (an mmap) instead of slices, so that no packet is copied before the
decoder knows it wants it: a 1,000-agent failover gives hundreds of thousands of frames.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
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
    "MAX_FRAME",
    "OnCorrupt",
    "iter_frames",
    "network_header",
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


_H = struct.Struct(">H")
_U32BE = struct.Struct(">I")
_U32LE = struct.Struct("<I")
_VLAN = (0x8100, 0x88A8, 0x9100)


def network_header(lt: int, buf: Any, off: int, end: int) -> tuple[int, int] | None:
    """(ethertype, offset of the network header) of a frame of link type ``lt`` at ``buf[off:end]``, VLAN
    tags skipped (a SPAN port keeps them); None for a frame too short or of another link type. One reading
    of the link layer for the decoder and the redactor."""
    if lt == LINKTYPE_ETHERNET and off + 14 <= end:
        etype, l3 = _H.unpack_from(buf, off + 12)[0], off + 14
    elif lt == LINKTYPE_LINUX_SLL2 and off + 20 <= end:
        etype, l3 = _H.unpack_from(buf, off)[0], off + 20
    elif lt == LINKTYPE_LINUX_SLL and off + 16 <= end:
        etype, l3 = _H.unpack_from(buf, off + 14)[0], off + 16
    elif lt in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6) and off < end:
        etype, l3 = (0x0800 if buf[off] >> 4 == 4 else 0x86DD), off
    elif lt in (LINKTYPE_NULL, LINKTYPE_LOOP) and off + 4 <= end:
        (fam,) = (_U32BE if lt == LINKTYPE_LOOP else _U32LE).unpack_from(buf, off)
        if fam > 0xFFFF:  # NULL is in the writer's byte order, which may not be little-endian
            (fam,) = _U32BE.unpack_from(buf, off)
        etype, l3 = (0x0800 if fam == 2 else 0x86DD if fam in (10, 24, 28, 30) else 0), off + 4
    else:
        return None
    while etype in _VLAN and l3 + 4 <= end:
        etype, l3 = _H.unpack_from(buf, l3 + 2)[0], l3 + 4
    return etype, l3


class DecodeError(Exception):
    """The file is not a capture this module can read."""


# (frame number, time, link type, buffer, start, end, original length)
Frame = tuple[int, float, int, Any, int, int, int]


# Told where and why a capture file stops holding together (a length that lies): reading stops there.
OnCorrupt = Callable[[int, str], None]
# The largest frame a capture tool writes (tcpdump's and dumpcap's maximum snapshot length).
MAX_FRAME = 262144


def iter_frames(buf: Any, on_corrupt: OnCorrupt | None = None) -> Iterator[Frame]:
    """Frames of a classic pcap or a pcapng held in ``buf`` (bytes or mmap).

    Every frame lies inside ``buf``. A file cut short (capture still being written, or killed) ends at its
    last whole frame. A record or block whose length lies (a corrupt file) ends the reading there too, and
    ``on_corrupt(offset, reason)`` is told, so the decoder can count it rather than raise.
    """
    if len(buf) < 4:
        raise DecodeError("file too short for a capture header")
    magic = bytes(buf[:4])
    report = on_corrupt or _ignore
    if magic == b"\x0a\x0d\x0d\x0a":
        return _iter_pcapng(buf, report)
    return _iter_pcap(buf, report)


def _ignore(_offset: int, _reason: str) -> None:
    pass


_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}


def _iter_pcap(buf: Any, on_corrupt: OnCorrupt) -> Iterator[Frame]:
    magic = bytes(buf[:4])
    if magic not in _PCAP_MAGIC or len(buf) < 24:
        raise DecodeError(f"not a pcap or pcapng file (magic {magic.hex()})")
    endian, scale = _PCAP_MAGIC[magic]
    snaplen, network = struct.unpack_from(endian + "II", buf, 16)
    linktype = network & 0xFFFF  # the upper bits may carry FCS information
    max_incl = max(snaplen, MAX_FRAME)
    rec = struct.Struct(endian + "IIII").unpack_from
    size = len(buf)
    off = 24
    n = 0
    while off + 16 <= size:
        sec, frac, incl, orig = rec(buf, off)
        if incl > max_incl:  # no capture tool writes this: the record header is garbage
            on_corrupt(off, f"record length {incl} above the snapshot length {max_incl}")
            break
        off += 16
        end = off + incl
        if end > size:  # cut short (capture still being written, or killed): stop at the last whole frame
            break
        n += 1
        yield n, sec + frac * scale, linktype, buf, off, end, orig
        off = end


_BOM = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}


def _iter_pcapng(buf: Any, on_corrupt: OnCorrupt) -> Iterator[Frame]:
    size = len(buf)
    off = 0
    endian = "<"
    interfaces: list[tuple[int, float, int]] = []  # linktype, seconds per tick, snaplen
    n = 0
    while off + 12 <= size:
        btype_raw = bytes(buf[off : off + 4])
        if btype_raw == b"\x0a\x0d\x0d\x0a":  # section header: byte order may change per section
            bom = _BOM.get(bytes(buf[off + 8 : off + 12]))
            if bom is None:
                on_corrupt(off, "section header without a byte-order magic")
                break
            endian = bom
            interfaces = []
        btype, blen = struct.unpack_from(endian + "II", buf, off)
        if off + blen > size:
            if blen % 4 or blen > 2 * MAX_FRAME:  # no tool writes such a block: the length lies
                on_corrupt(off, f"block length {blen} beyond the end of the file")
            break  # else cut short (capture still being written, or killed): stop at the last whole block
        # A block's length is a multiple of 4, at least 12, and repeated at its end: else it lies.
        if blen < 12 or blen % 4 or struct.unpack_from(endian + "I", buf, off + blen - 4)[0] != blen:
            on_corrupt(off, f"block length {blen} does not hold")
            break
        body = off + 8
        bend = off + blen - 4  # the body ends where the trailing length starts
        if btype == 1:  # interface description
            if body + 8 > bend:
                on_corrupt(off, "interface description shorter than its fields")
                break
            lt, _reserved, snap = struct.unpack_from(endian + "HHI", buf, body)
            interfaces.append((lt, _pcapng_tsresol(buf, endian, body + 8, bend), snap))
        elif btype == 6:  # enhanced packet
            if body + 20 > bend:
                on_corrupt(off, "enhanced packet block shorter than its fields")
                break
            ifid, hi, lo, incl, orig = struct.unpack_from(endian + "IIIII", buf, body)
            if ifid < len(interfaces):
                lt, tick, _snap = interfaces[ifid]
                start = body + 20
                n += 1
                yield n, ((hi << 32) | lo) * tick, lt, buf, start, min(start + incl, bend), orig
        elif btype == 3 and interfaces:  # simple packet
            if body + 4 > bend:
                on_corrupt(off, "simple packet block shorter than its fields")
                break
            (orig,) = struct.unpack_from(endian + "I", buf, body)
            lt, _tick, snap = interfaces[0]
            incl = min(orig, snap) if snap else orig
            start = body + 4
            n += 1
            yield n, 0.0, lt, buf, start, min(start + incl, bend), orig
        off += blen


def _pcapng_tsresol(buf: Any, endian: str, off: int, end: int) -> float:
    """Seconds per timestamp tick from an interface's options (default microseconds)."""
    while off + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", buf, off)
        if code == 0:
            break
        if code == 9 and length >= 1 and off + 5 <= end:
            v = buf[off + 4]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
        off += 4 + ((length + 3) & ~3)
    return 1e-6
