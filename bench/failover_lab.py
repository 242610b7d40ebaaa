"""What the failover bench reads of the lab from outside the stack: PBX registrations, CTI sessions, the
agents' admin state, and the captures on the switch ports (UL logins, SIP)."""

from __future__ import annotations

import json
import mmap
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness.capture import Capture
from harness.decode import iter_frames
from harness.lab import Lab, Tap
from harness.observe import ObserveError, cti_query, jsonrpc, parse_ul_dump


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mgmt(lab: Lab, kind: str, site: str) -> tuple[str, Any]:
    d = lab.topology.of_kind(kind, site)[0]
    return d.control_address, d.spec


def pbx_extensions(lab: Lab, site: str, timeout: float = 5.0) -> set[str]:
    host, spec = mgmt(lab, "pbx", site)
    regs = parse_ul_dump(jsonrpc(f"http://{host}:{spec.rpc_port}/RPC", "ul.dump", timeout=timeout))
    return {r["extension"] for r in regs if isinstance(r["expires"], int) and r["expires"] > 0}


def cti_sessions(lab: Lab, site: str, timeout: float = 5.0) -> dict[str, dict[str, Any]]:
    host, spec = mgmt(lab, "cti", site)
    reply = cti_query(host, spec.port, {"type": "sessions", "id": 1}, timeout)
    return {s["agent"]: s for s in reply.get("sessions") or []}


def registered_count(lab: Lab, site: str) -> int:
    """Contacts in a PBX's location table: one cheap statistic, not a dump (a dump costs Kamailio 0.2 s at
    5,000 contacts, and the bench must not load the PBX it measures)."""
    host, spec = mgmt(lab, "pbx", site)
    stats = jsonrpc(f"http://{host}:{spec.rpc_port}/RPC", "stats.get_statistics", "usrloc:", timeout=5.0)
    for line in stats or []:
        name, _, value = str(line).partition(" = ")
        if name.strip() == "usrloc:registered_users":
            return int(value)
    return -1


def wait_online(lab: Lab, agents: list[Any], timeout: float) -> tuple[float, dict[str, str]]:
    """Until every agent is online at exactly one site: logged in, linked and ready at that site's CTI and
    registered at that site's PBX. Returns the time it took and each agent's site.

    Polled every 2 s with the CTIs' sessions and the PBXs' registration counts; once both look complete, one
    full ``ul.dump`` per PBX checks each agent's own registration. An agent whose login at home failed and
    that logged in at the other site (design step 6) counts as online there."""
    t0 = time.monotonic()
    sites = sorted(lab.topology.sites)
    last_say = -10.0
    while True:
        missing, note, where = 0, "", {}
        try:
            sess = {site: cti_sessions(lab, site) for site in sites}
            for a in agents:
                at = [
                    site
                    for site in sites
                    if (s := sess[site].get(a.id)) and s.get("linked") and s.get("state") == "ready"
                ]
                if len(at) == 1:
                    where[a.id] = at[0]
            missing = len(agents) - len(where)
            for site in sites:
                n = sum(1 for v in where.values() if v == site)
                missing += max(0, n - registered_count(lab, site))
            if missing == 0:
                regs = {site: pbx_extensions(lab, site, timeout=10.0) for site in sites}
                missing = sum(1 for a in agents if a.extension not in regs[where[a.id]])
        except ObserveError as e:
            missing, note = -1, str(e)
        took = time.monotonic() - t0
        if missing == 0:
            return took, where
        if took - last_say >= 10:
            say(
                f"waiting for agents online: {missing if missing >= 0 else '?'} missing ({took:.0f} s) {note}"
            )
            last_say = took
        if took > timeout:
            raise SystemExit(f"error: not every agent came online within {timeout:.0f} s ({missing} missing)")
        time.sleep(2.0)


def set_not_ready(lab: Lab, site: str, agent_ids: list[str]) -> None:
    dev = next(h for h in lab.topology.of_kind("host", site) if h.spec.role == "agents")
    host, port = dev.control_address, dev.spec.admin_port

    def one(aid: str) -> None:
        body = json.dumps({"state": "not_ready"}).encode()
        req = urllib.request.Request(
            f"http://{host}:{port}/agents/{aid}/state",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    with ThreadPoolExecutor(16) as ex:
        list(ex.map(one, agent_ids))


def ul_admission(lab: Lab, site: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The admission control's view from a site's UL health (limit, latency, deferrals, and the logins per
    second it admitted while some waited: its measured capacity at saturation); None if it has none."""
    host, spec = mgmt(lab, "ul", site)
    try:
        with urllib.request.urlopen(f"http://{host}:{spec.port}/v1/health", timeout=timeout) as r:
            health = json.loads(r.read())
    except (OSError, ValueError):
        return None
    view = health.get("admission") if isinstance(health, dict) else None
    return view if isinstance(view, dict) else None


# ---- capture -------------------------------------------------------------------------------------------


def port_tap(lab: Lab, device: str) -> Tap:
    for sw in lab.topology.of_kind("switch"):
        for pname, port in sw.spec.ports.items():
            tap = lab.backend.tap(sw.name, pname) if port.connects == device else None
            if tap is not None:
                return tap
    raise SystemExit(f"error: no switch port for {device}")


def start_captures(lab: Lab, out: Path, source_of: str | None = None) -> dict[str, Capture]:
    """tcpdump on both PBXs' switch ports (SIP), on ntg's UL port (logins), and with ``source_of`` a device,
    on its port for the packets it sends (``source``: when a blackhole took hold)."""
    caps: dict[str, Capture] = {}
    if source_of is not None:
        d = lab.topology.device(source_of)
        tap = port_tap(lab, d.name)
        caps["source"] = Capture(
            f"{d.name}-source", tap.iface, out, filter=f"src host {d.spec.address}", netns_path=tap.netns
        )
    for site in ("sha", "ntg"):
        d = lab.topology.of_kind("pbx", site)[0]
        tap = port_tap(lab, d.name)
        caps[f"{site}-pbx"] = Capture(
            f"{site}-pbx", tap.iface, out, filter=f"udp port {d.spec.sip_port}", netns_path=tap.netns
        )
    ul = lab.topology.of_kind("ul", "ntg")[0]
    tap = port_tap(lab, ul.name)
    caps["ntg-ul"] = Capture(
        "ntg-ul", tap.iface, out, filter=f"tcp dst port {ul.spec.port}", netns_path=tap.netns
    )
    for c in caps.values():
        c.start()
    return caps


_LOGIN = re.compile(rb"POST /v1/login HTTP/1\.1")
_AGENT = re.compile(rb'"agent":\s*"([^"]+)"')


def ul_logins(pcap: Path) -> list[tuple[float, str | None]]:
    """(time, agent) of every ``POST /v1/login`` in an Ethernet/IPv4 capture (headers and JSON body in one
    segment, as aiohttp sends a small request)."""
    out: list[tuple[float, str | None]] = []
    if not pcap.exists() or pcap.stat().st_size <= 24:
        return out
    with pcap.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for _n, ts, _lt, buf, off, end, _orig in iter_frames(mm):
            ip = off + 14
            if end - ip < 40:
                continue
            tcp = ip + (buf[ip] & 0x0F) * 4
            data = bytes(buf[tcp + (buf[tcp + 12] >> 4) * 4 : end])
            if _LOGIN.search(data):
                m = _AGENT.search(data)
                out.append((ts, m.group(1).decode() if m else None))
    return out


# ---- fault time ----------------------------------------------------------------------------------------
