"""The wire, mapped to the history: captured SIP and CTI messages as `sip` and `cti` observations."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from harness.lab import Lab

__all__ = ["addresses", "cti_observations", "sip_observations"]


def addresses(lab: Lab, kind: str) -> dict[str, tuple[str, str]]:
    """Data address -> (device, site) of every device of a kind."""
    return {str(d.spec.address): (d.name, d.site) for d in lab.topology.of_kind(kind)}


def cti_observations(
    decoded: Iterable[Any], cti_addr: Mapping[str, tuple[str, str]]
) -> list[tuple[Any, str, dict]]:
    """Map captured CTI messages to ``cti`` observations: (event, CTI device, value).

    What the CTI confirmed (docs/history.md): ``login_ok`` -> login, ``state_ok`` and ``heartbeat_ack``
    -> state (with ``pbx_link`` when the ack says the PBX link is down), ``logout_ok`` -> logout
    (``lapsed`` when the session's lease had run out before the CTI read the logout), a pushed
    ``fenced`` event or an ``admin_ok`` to the UL's ``fence`` -> fenced; its other pushed events by name
    (``pbx_link_down``, ``phone_unregistered``, ...). And what the clients asked that tells a blip was
    seen: ``heartbeat`` (the client's, answered or not) and ``status`` (a re-check on a fresh connection,
    with its ``extension``). Replies carry no agent, so each TCP connection is followed from its
    ``login`` (or the admin request's id) to learn whose it is; a connection opened before the capture
    began stays anonymous, and the snapshots cover it. A message the CTI wrote well before its capture
    carries ``held`` (seconds, from its ``at`` stamp): the checkers date it when written.

    On a connection that is no agent's (no ``login_ok`` seen on it: an attacker's, a probe's), what the
    CTI answered is kept too, without ``agent`` (whoever the connection claimed to be is ``claimed``): an
    ``error`` line -> ``refused`` (its ``code``, ``reason``), an ``admin_ok`` -> ``admin_ok`` (its
    ``op``), each with the ``client`` address it went to: the refusals a security scenario judges.
    """
    decoded = [ev for ev in decoded if ev.protocol == "cti"]
    offsets = write_offsets(decoded, cti_addr)
    conns: dict[tuple[str, str], dict[str, Any]] = {}
    out = []
    for ev in decoded:
        to_server = ev.dst_ip in cti_addr
        server_ip = ev.dst_ip if to_server else ev.src_ip
        if server_ip not in cti_addr:
            continue
        key = (ev.dst, ev.src) if to_server else (ev.src, ev.dst)
        conn = conns.setdefault(key, {})
        body = ev.body if isinstance(ev.body, dict) else {}
        device, site = cti_addr[server_ip]
        typ = body.get("type")
        if to_server:
            if typ == "login" and body.get("agent"):
                conn["agent"] = str(body["agent"])
            elif typ == "admin" and body.get("op") == "fence" and body.get("agent"):
                conn.setdefault("fencing", {})[json.dumps(body.get("id"))] = str(body["agent"])
            elif typ == "heartbeat" and conn.get("agent"):
                out.append((ev, device, {"event": "heartbeat", "site": site, "agent": conn["agent"]}))
            elif typ == "status" and not conn.get("agent"):
                asked = {"event": "status", "site": site, "extension": body.get("extension")}
                out.append((ev, device, {k: v for k, v in asked.items() if v is not None}))
            continue
        agent = conn.get("agent")
        value: dict[str, Any] | None = None
        if typ == "admin_ok" and body.get("op") == "fence":
            # the UL fenced a session here (a newer login elsewhere): the CTI confirms it ended
            fenced = conn.get("fencing", {}).pop(json.dumps(body.get("id")), None)
            if fenced and body.get("fenced"):
                # "lapsed": the session had already ended unconfirmed (lease, lost connection): this says
                # it is over by now, not that it lasted until now
                event = "lapsed" if body.get("lapsed") else "fenced"
                out.append((ev, device, {"event": event, "site": site, "agent": fenced}))
            continue
        if not conn.get("confirmed") and not conn.get("fencing") and typ in ("error", "admin_ok"):
            out.append((ev, device, _answer_to_stranger(ev, body, site, agent)))
            continue
        if typ == "login_ok":
            conn["confirmed"] = True
            conn["agent"] = agent = str(body.get("agent") or agent)
            conn["epoch"] = body.get("epoch")
            value = {"event": "login", "state": body.get("state")}
        elif typ in ("state_ok", "heartbeat_ack") and body.get("state"):
            value = {"event": "state", "state": body["state"]}
            if body.get("pbx_link") == "down":
                value["pbx_link"] = "down"
            if body.get("epoch") is not None:
                conn["epoch"] = body["epoch"]
        elif typ == "logout_ok" and body.get("lapsed"):
            # the session had ended by its lease before the CTI read the logout: over by now, ended earlier
            value = {"event": "lapsed"}
        elif typ == "logout_ok":
            value = {"event": "logout"}
        elif typ == "event" and body.get("event") == "ended":
            value = {"event": "logout"}  # its client closed the connection: the session ended with it
        elif typ == "event" and body.get("event"):
            value = {"event": str(body["event"])}
        if value is None or agent is None:
            continue
        held = held_back(ev, body, offsets.get(server_ip))
        if held is not None:
            value["held"] = held
        value.update({"site": site, "agent": agent, "epoch": conn.get("epoch")})
        out.append((ev, device, {k: v for k, v in value.items() if v is not None}))
    return out


def _answer_to_stranger(ev: Any, body: Mapping[str, Any], site: str, claimed: str | None) -> dict[str, Any]:
    """The ``refused``/``admin_ok`` observation of a CTI answer on a connection that is no agent's."""
    if body.get("type") == "error":
        value = {"event": "refused", "code": body.get("code"), "reason": body.get("reason")}
    else:
        value = {"event": "admin_ok", "op": body.get("op")}
    value.update(site=site, client=ev.dst, claimed=claimed, id=body.get("id"))
    return {k: v for k, v in value.items() if v is not None}


HELD_MIN = 0.05  # seconds: a message captured later than this after its CTI wrote it says so (``held``)


def write_offsets(decoded: Iterable[Any], cti_addr: Mapping[str, tuple[str, str]]) -> dict[str, float]:
    """Per CTI address, capture clock minus the CTI's clock: the least (capture time - ``at``) over what it
    sent, i.e. its clock offset plus the least transit (the CTI stamps each message when written)."""
    out: dict[str, float] = {}
    for ev in decoded:
        body = ev.body if isinstance(ev.body, dict) else None
        if body is None or ev.src_ip not in cti_addr:
            continue
        at = body.get("at")
        if isinstance(at, int | float) and not isinstance(at, bool):
            d = ev.time - at / 1000.0
            if d < out.get(ev.src_ip, math.inf):
                out[ev.src_ip] = d
    return out


def held_back(ev: Any, body: Mapping[str, Any], offset: float | None) -> float | None:
    """Seconds between the CTI writing this message and its capture, when more than HELD_MIN (TCP held
    it back: loss, a cut, a congestion window closed by loss); None when not stamped or prompt.
    scenarios/schedules/cti-loss-then-pause.json: an answer written before the CTI hung reached the wire
    as the hang ended, after the agent had logged in at the other site."""
    at = body.get("at")
    if offset is None or not isinstance(at, int | float) or isinstance(at, bool):
        return None
    held = ev.time - (at / 1000.0 + offset)
    return round(held, 3) if held > HELD_MIN else None


def sip_observations(
    decoded: Iterable[Any], pbx_addr: Mapping[str, tuple[str, str]]
) -> list[tuple[Any, str, dict]]:
    """Captured SIP messages to or from a PBX, as ``sip`` observations with the PBX's ``site``."""
    out = []
    for ev in decoded:
        if ev.protocol != "sip":
            continue
        for ip in (ev.registrar, ev.src_ip, ev.dst_ip):
            if ip in pbx_addr:
                device, site = pbx_addr[ip]
                d = ev.to_dict()
                d["site"] = site
                out.append((ev, device, {k: v for k, v in d.items() if v is not None}))
                break
    return out
