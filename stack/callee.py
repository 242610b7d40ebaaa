"""The lab's test callees: the outside world an agent dials, answering every call and recording each one.

    python -m stack.callee --extension 19091 --password-env HIL_CALLEE_PASSWORD \\
        --registrar 198.18.1.10:5060 --sip-bind 198.18.1.90:5070 --record /run/lab/sha-caller1/callee.jsonl

Why a trunk and not an extension: an agent dials outside numbers, which no PBX registers. So each site's
PBX routes a number that is no extension of its own (virtual/kamailio.cfg.tmpl, route[TRUNK]) to the
binding registered under the AOR ``pstn``; this program registers that binding (digest with the caller
host's own SIP account, Contact user ``pstn``) at its site's PBX, as a carrier gateway does, and answers
every number that arrives on it, any number of calls at once (a campaign dials many).

What a number does (its last digits): ``486`` busy (486 at once), ``480`` rings until the caller gives up
(CANCEL), ``77HH`` is answered and held ``HH`` seconds (a scenario's call that must outlast something);
anything else rings ``--answer-after`` s, is answered, and is hung up by the callee after ``--hold`` s
(0: only the caller hangs up).

The record (``--record``, JSON lines, flushed per line, the file 0600): an ``invite`` line when a call
arrives and a ``call`` line when it ends: ``call_id`` (the same as in the capture at the agent's PBX),
``number``, ``from`` (the calling extension), ``source``, wall times ``invite_at`` / ``answered_at`` /
``ended_at``, ``outcome`` (answered | busy | cancelled | no_ack), ``ended_by`` (caller | callee | None).
A retransmitted INVITE is no new call. SIGTERM unregisters and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from sipcore.message import SipMessage, build_response, new_branch
from sipcore.uri import format_host, hostport_of, uri_of, user_of
from stack.common.addr import hostport
from stack.common.daemon import secret_from_env, until_signalled
from stack.common.loop import run_main
from stack.phone.account import minimal_sdp
from stack.phone.endpoint import SipEndpoint
from stack.phone.transaction import SipTimers
from stack.phone.ua import Phone

log = logging.getLogger("stack.callee")

TRUNK_USER = "pstn"  # the Contact user that makes a registration the site's trunk (kamailio.cfg.tmpl)
CONTACT_USER = "callee"  # this program's dialog Contact: no phone of the endpoint, so it reaches us
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"
HOLD_RE = re.compile(r"77(\d\d)$")  # a number ending in 77HH: held HH seconds


@dataclass
class Leg:
    """One call the callee got (until it ends)."""

    invite: SipMessage
    addr: tuple[str, int]
    tag: str
    number: str
    record: dict[str, Any]
    last: bytes | None = None  # the last response to the INVITE (repeated on a retransmission)
    answered: bool = False
    confirmed: bool = False
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def cancel_timers(self) -> None:
        for h in self.timers:
            h.cancel()
        self.timers.clear()


class Callee:
    """The answering side for every number (see the module docstring)."""

    def __init__(
        self, endpoint: SipEndpoint, record: TextIO | None, *, answer_after: float = 0.3, hold: float = 2.0
    ) -> None:
        self.ep = endpoint
        self.out = record
        self.answer_after = answer_after
        self.hold = hold
        self.legs: dict[str, Leg] = {}
        self.done: dict[str, bytes] = {}  # Call-ID -> final answer of an ended call (late retransmissions)
        self.records: list[dict[str, Any]] = []  # every ``call`` line written (tests read it)

    def _write(self, line: dict[str, Any]) -> None:
        if self.out is not None:
            self.out.write(json.dumps(line, sort_keys=True) + "\n")
            self.out.flush()

    def _contact(self, addr: tuple[str, int]) -> str:
        host = format_host(self.ep.contact_host(addr[0]))
        return f"Contact: <sip:{CONTACT_USER}@{host}:{self.ep.local[1]}>\r\n"

    # ---- requests ---------------------------------------------------------------------------------

    def on_request(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        m = msg.method
        if m == "INVITE":
            self._invite(msg, addr)
        elif m == "ACK":
            leg = self.legs.get(msg.call_id)
            if leg is not None and leg.answered and not leg.confirmed:
                leg.confirmed = True
                leg.cancel_timers()
                held = HOLD_RE.search(leg.number)
                hold = int(held.group(1)) if held else self.hold
                if hold > 0:
                    leg.timers.append(self.ep.loop.call_later(hold, self._hang_up, leg))
        elif m == "BYE":
            leg = self.legs.get(msg.call_id)
            self.ep.send(build_response(msg, 200 if leg else 481, "OK" if leg else "No Such Call"), addr)
            if leg is not None:
                self._end(leg, "answered", "caller")
        elif m == "CANCEL":
            self._cancel(msg, addr)
        elif m == "OPTIONS":
            self.ep.send(build_response(msg, 200, "OK", extra=f"Allow: {ALLOW}\r\n"), addr)
        else:
            self.ep.send(build_response(msg, 405, "Method Not Allowed", extra=f"Allow: {ALLOW}\r\n"), addr)

    def _invite(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        cid = msg.call_id
        leg = self.legs.get(cid)
        if leg is not None or cid in self.done:  # a retransmission (or a re-INVITE): the last answer again
            last = leg.last if leg is not None else self.done[cid]
            if leg is not None and leg.answered and msg.header("to", "").find("tag=") >= 0:
                last = self._ok(leg, msg)  # a session refresh inside the call
            if last is not None:
                self.ep.send(last, addr)
            return
        number = user_of(msg.uri) or user_of(uri_of(msg.header("to", "") or "")) or ""
        rec = {
            "call_id": cid,
            "number": number,
            "from": user_of(uri_of(msg.header("from", "") or "")) or "",
            "source": f"{addr[0]}:{addr[1]}",
            "invite_at": round(time.time(), 6),
        }
        self._write({"event": "invite", **rec})
        leg = Leg(msg, addr, new_branch()[-10:], number, rec)
        self.legs[cid] = leg
        self.ep.send(build_response(msg, 100, "Trying"), addr)
        if number.endswith("486"):
            leg.last = build_response(msg, 486, "Busy Here", to_tag=leg.tag)
            self.ep.send(leg.last, addr)
            self._end(leg, "busy", None)
            return
        leg.last = build_response(
            msg, 180, "Ringing", to_tag=leg.tag, extra=self._contact(addr), record_route=True
        )
        self.ep.send(leg.last, addr)
        if not number.endswith("480"):
            leg.timers.append(self.ep.loop.call_later(self.answer_after, self._answer, leg))

    def _ok(self, leg: Leg, msg: SipMessage) -> bytes:
        host = self.ep.contact_host(leg.addr[0])
        return build_response(
            msg,
            200,
            "OK",
            to_tag=leg.tag,
            extra=f"{self._contact(leg.addr)}Allow: {ALLOW}\r\n",
            body=minimal_sdp(host, 30000, int(leg.record["invite_at"])),
            content_type="application/sdp",
            record_route=True,
        )

    def _answer(self, leg: Leg) -> None:
        if self.legs.get(leg.invite.call_id) is not leg or leg.answered:
            return
        leg.cancel_timers()
        leg.answered = True
        leg.record["answered_at"] = round(time.time(), 6)
        leg.last = self._ok(leg, leg.invite)
        self.ep.send(leg.last, leg.addr)
        t = self.ep.timers
        self._retransmit(leg, t.t1)
        leg.timers.append(self.ep.loop.call_later(t.timer_f, self._no_ack, leg))

    def _retransmit(self, leg: Leg, interval: float) -> None:
        # RFC 3261 13.3.1.4: the 2xx again, T1 doubling to T2, until the ACK.
        def again() -> None:
            if self.legs.get(leg.invite.call_id) is leg and not leg.confirmed and leg.last is not None:
                self.ep.send(leg.last, leg.addr)
                self._retransmit(leg, min(interval * 2, self.ep.timers.t2))

        leg.timers.append(self.ep.loop.call_later(interval, again))

    def _no_ack(self, leg: Leg) -> None:
        if self.legs.get(leg.invite.call_id) is leg and not leg.confirmed:
            self.ep.spawn(self._bye(leg))
            self._end(leg, "no_ack", "callee")

    def _cancel(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        leg = self.legs.get(msg.call_id)
        if leg is None or leg.answered or msg.branch != leg.invite.branch:
            self.ep.send(build_response(msg, 481, "Call/Transaction Does Not Exist"), addr)
            return
        self.ep.send(build_response(msg, 200, "OK", to_tag=leg.tag), addr)
        leg.last = build_response(leg.invite, 487, "Request Terminated", to_tag=leg.tag)
        self.ep.send(leg.last, leg.addr)
        self._end(leg, "cancelled", "caller")

    def _hang_up(self, leg: Leg) -> None:
        if self.legs.get(leg.invite.call_id) is leg:
            self.ep.spawn(self._bye(leg))
            self._end(leg, "answered", "callee")

    async def _bye(self, leg: Leg) -> None:
        inv = leg.invite
        routes = list(inv.header_values("record-route"))  # a UAS's route set: Record-Route in order
        contact = inv.header("contact")
        target = uri_of(contact) if contact else uri_of(inv.header("from", "") or "")
        dest = hostport_of(uri_of(routes[0])) if routes else hostport_of(target)
        branch = new_branch()
        host = format_host(self.ep.contact_host(dest[0]))
        to_hdr = inv.header("to", "") or ""
        data = (
            f"BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{self.ep.local[1]};rport;branch={branch}\r\n"
            "Max-Forwards: 70\r\n"
            + "".join(f"Route: {r}\r\n" for r in routes)
            + f"From: {to_hdr};tag={leg.tag}\r\nTo: {inv.header('from', '')}\r\n"
            f"Call-ID: {inv.call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        await self.ep.request(data, dest, branch)

    def _end(self, leg: Leg, outcome: str, ended_by: str | None) -> None:
        leg.cancel_timers()
        cid = leg.invite.call_id
        if self.legs.pop(cid, None) is None:
            return
        if leg.last is not None:
            self.done[cid] = leg.last
            if len(self.done) > 10_000:
                self.done.pop(next(iter(self.done)))
        rec = {**leg.record, "ended_at": round(time.time(), 6), "outcome": outcome, "ended_by": ended_by}
        self.records.append(rec)
        self._write({"event": "call", **rec})


class TrunkEndpoint(SipEndpoint):
    """The phones' endpoint, with every request that is for no phone (the dialled numbers) going to the
    :class:`Callee` instead of a 404."""

    callee: Callee | None = None

    def _no_phone(self, msg: SipMessage, addr: tuple[Any, int]) -> None:
        if self.callee is None:
            super()._no_phone(msg, addr)
            return
        self.callee.on_request(msg, (addr[0], addr[1]))


async def open_callee(
    bind: tuple[str, int],
    registrar: tuple[str, int],
    extension: str,
    password: str,
    record: TextIO | None = None,
    *,
    answer_after: float = 0.3,
    hold: float = 2.0,
    timers: SipTimers | None = None,
    expires: int = 60,
) -> tuple[TrunkEndpoint, Callee, Phone]:
    """Bind, start answering and register the trunk (its registration retried by itself until it holds)."""
    ep = await TrunkEndpoint.open(bind[0], bind[1], timers=timers)
    assert isinstance(ep, TrunkEndpoint)
    callee = Callee(ep, record, answer_after=answer_after, hold=hold)
    ep.callee = callee
    trunk = Phone(ep, extension, password, registrar, expires, contact_user=TRUNK_USER, auto_answer=None)
    ep.spawn(trunk.register())
    return ep, callee, trunk


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m stack.callee", description=__doc__.split("\n")[0])
    ap.add_argument("--extension", required=True, help="the SIP account the trunk registers with")
    ap.add_argument("--password-env", required=True, help="env var holding its SIP password")
    ap.add_argument("--registrar", required=True, type=hostport, help="the site PBX HOST:PORT")
    ap.add_argument("--sip-bind", required=True, type=hostport, help="local SIP ADDR:PORT (UDP)")
    ap.add_argument("--record", required=True, help="JSON-lines file of every call (appended)")
    ap.add_argument("--answer-after", type=float, default=0.3, help="seconds of ringing before answering")
    ap.add_argument("--hold", type=float, default=2.0, help="seconds until the callee hangs up (0: never)")
    ap.add_argument("--t1", type=float, default=0.5, help="SIP timer T1 in seconds")
    ap.add_argument("--log-level", default="INFO")
    return ap.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    password = secret_from_env(args.password_env, status=1)
    fd = os.open(args.record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    t1 = args.t1
    with os.fdopen(fd, "a") as out:
        ep, _, trunk = await open_callee(
            args.sip_bind,
            args.registrar,
            args.extension,
            password,
            out,
            answer_after=args.answer_after,
            hold=args.hold,
            timers=SipTimers(t1=t1, t2=8 * t1, timer_f=64 * t1),
        )
        log.info(json.dumps({"event": "started", "sip": list(ep.local), "registrar": list(args.registrar)}))
        await until_signalled()
        try:
            await asyncio.wait_for(trunk.unregister(), timeout=max(2.0, 8 * t1))
        except TimeoutError:
            log.warning(json.dumps({"event": "unregister_timeout"}))
        trunk.close()
        ep.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(message)s")
    return run_main(run(args))


if __name__ == "__main__":
    sys.exit(main())
