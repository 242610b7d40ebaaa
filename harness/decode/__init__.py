"""Turn a capture file into SIP and CTI events, fast enough for a 1,000-agent failover.

Why not scapy or tshark: scapy dissects every layer of every packet in Python (a few thousand packets per
second) and tshark dissects everything in C but then prints text we would parse again. A failover of 1,000+
agents gives hundreds of thousands of packets, so this package reads the pcap with ``struct`` over an mmap
(``pcapfile``), walks the link/IP/UDP/TCP headers by offset (``packets``), reassembles TCP streams by
sequence number per direction (``tcp``: out-of-order segments, overlaps, retransmissions and duplicates give
each byte once), and hands only SIP and CTI payloads to the message builder (``messages``: ``sipcore.scan``
for SIP, framed by Content-Length over TCP; ``json`` for CTI, one object per line). The results are
``events`` (``Event``, ``DecodeStats``, ``Decoded``). ``bench/bench_capture.py`` measures it against tshark.

Reads classic pcap (either byte order, micro- or nanosecond timestamps) and pcapng (what dumpcap writes),
from a file (``decode_pcap``) or from memory (``decode_buffer``). Evidence that could not be read is counted
in ``DecodeStats`` (gaps in a TCP stream, malformed messages, truncated packets, a file whose lengths lie)
so a checker can answer ``unknown`` instead of trusting a partial picture. Nothing in a capture makes it
raise (tests/test_fuzz_*.py fuzz it): DecodeError means the file is not a capture at all.
"""

from harness.decode.events import Close, Decoded, DecodeStats, Event, to_dicts
from harness.decode.packets import SIP_PORTS, decode_buffer, decode_pcap
from harness.decode.pcapfile import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    DecodeError,
    iter_frames,
    network_header,
)

__all__ = [
    "network_header",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_LOOP",
    "LINKTYPE_NULL",
    "LINKTYPE_RAW",
    "SIP_PORTS",
    "Close",
    "DecodeError",
    "DecodeStats",
    "Decoded",
    "Event",
    "decode_buffer",
    "decode_pcap",
    "iter_frames",
    "to_dicts",
]
