"""Garbage on the wire: bytes that never became a message, sent where the server accepted nothing.

Why apart from capture loss: a malformed message in a stream is counted as possible loss (``lossless``
false) because it may be a message the decoder failed to read, which could hide an agent's event. But an
attacker's flood sends malformed bytes by design (harness/tools/flood.py), and counting them as loss left
every verdict read from a flooded capture ``unknown``. What tells the two apart is the server: on an
agent's connection it accepts messages (a ``login_ok``, a 200); on a garbage connection it answers with
refusals only (a CTI ``error`` line, a SIP 4xx) or not at all. So a stream's unread bytes are garbage
(``garbage_streams``, ``garbage_bytes``, ``garbage_messages`` in ``DecodeStats``, not loss) only when the
capture shows the server's side of its connection and that side accepted nothing. A one-way capture cannot
show it: there they stay loss, as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.decode.events import DecodeStats, Event

__all__ = ["UdpFlows", "accepts", "connection_accepted", "count_garbage", "role"]

UdpFlow = tuple[str, int, str, int]  # (source, source port, destination, destination port)


def accepts(ev: Event) -> bool:
    """The message shows its sender took the peer's traffic as valid: any CTI message but an ``error``
    line; a SIP request, or a final response 2xx/3xx (a 1xx or a 4xx-6xx accepts nothing yet)."""
    if ev.protocol == "cti":
        return isinstance(ev.type, str) and ev.type != "error"
    return ev.method is not None or (ev.status is not None and 200 <= ev.status < 400)


def connection_accepted(mine: tuple[int, int, int], back: tuple[int, int, int], server: str | None) -> bool:
    """Whether a TCP connection carried an accepted message; ``mine`` and ``back`` are each direction's
    (messages, accepting messages, malformed messages). ``server`` says which direction is the server's
    (``"mine"``/``"back"``, from the SYN or the service port). It accepted something; or it said nothing
    at all (it refused nothing either) and the client's side carried nothing malformed (a message cut short
    is a connection that died, judged as such). A silent server whose client sent malformed bytes beside
    parseable ones is a flood's (a fresh-clone run under load: 5 requests and 3 malformed messages on one
    flood connection the PBX never answered): a capture that lost bytes of an agent's connection shows as
    ``tcp_gaps`` anyway. Unknown (None): any accepting message in either direction will do."""
    if server is None:
        return mine[1] > 0 or back[1] > 0
    srv, cli = (mine, back) if server == "mine" else (back, mine)
    return srv[1] > 0 or (srv[0] == 0 and cli[2] == 0)


class UdpFlows:
    """SIP over UDP: the malformed datagrams of each flow, settled at the end of the capture against what
    the server sent back to that flow."""

    def __init__(self) -> None:
        self.bad: dict[UdpFlow, list[int]] = {}  # flow -> [malformed datagrams, their bytes]

    def malformed(self, flow: UdpFlow, size: int) -> None:
        entry = self.bad.get(flow)
        if entry is None:
            entry = self.bad[flow] = [0, 0]
        entry[0] += 1
        entry[1] += size

    def settle(self, events: Iterable[Event], stats: DecodeStats) -> None:
        """Move the malformed datagrams of each flow the server never accepted anything from into the
        garbage figures. The server's side counts as captured when the capture holds any SIP it sent (a
        point that sees only one direction keeps them as loss)."""
        if not self.bad:
            return
        servers = {(f[2], f[3]) for f in self.bad}
        accepted: set[UdpFlow] = set()
        heard: set[tuple[str, int]] = set()
        for ev in events:
            if ev.protocol != "sip" or ev.transport != "udp" or (ev.src_ip, ev.src_port) not in servers:
                continue
            heard.add((ev.src_ip, ev.src_port))
            if accepts(ev):
                accepted.add((ev.dst_ip, ev.dst_port, ev.src_ip, ev.src_port))
        for flow, (n, size) in self.bad.items():
            if flow in accepted or (flow[2], flow[3]) not in heard:
                continue
            stats.malformed_sip -= n
            count_garbage(stats, n, size)


def count_garbage(stats: DecodeStats, messages: int, size: int) -> None:
    """One garbage stream (or UDP flow) of ``messages`` unreadable messages, ``size`` bytes."""
    stats.garbage_streams += 1
    stats.garbage_messages += messages
    stats.garbage_bytes += size


def role(sport: int, dport: int, opened: bool, back_opened: bool, ports: Any) -> str | None:
    """Which direction of a connection is the server's: the one that did not send the first SYN, else the
    one sending from a service port (``ports``); None when neither shows."""
    if opened != back_opened:
        return "back" if opened else "mine"
    if sport in ports and dport not in ports:
        return "mine"
    if dport in ports and sport not in ports:
        return "back"
    return None
