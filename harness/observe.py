"""Observation of the system under test from outside: what the PBXs, the CTIs and the wire show.

Recovery is judged from this evidence, never from what the stack says of itself (DESIGN.md). Every reader
here speaks a device's own management protocol, so it works against a contact center that is not ours:

- a PBX's registrations: Kamailio JSON-RPC ``ul.dump`` on the PBX's management address (the full dump:
  ``ul.dump brief`` gives AoRs without contacts on 5.6.3, so a second contact would hide);
- a CTI's sessions: the CTI ``sessions`` query (docs/cti-protocol.md) on its management address;
- the lab itself: links and processes (``lab_snapshot``), from the virtual lab's keeper;
- the wire: tcpdump on each PBX's and each CTI's switch port, decoded into ``sip`` / ``cti`` observations.

Everything lands in a :class:`harness.history.History` with the schema of docs/history.md, so the checkers
(harness/checks.py) can judge it, now or later. Usable from a plain script::

    with History(path) as h, Observer(lab, h) as obs:      # polls every PBX and CTI at ~5 Hz
        record_start(lab, h)
        ...                                                  # the scenario
        obs.wait_until(lambda v: v.all_at(expected), 30)
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from harness.capture import Capture, CaptureResult
from harness.decode import Decoded, decode_pcap
from harness.history import History
from harness.lab import Lab

T = TypeVar("T")
log = logging.getLogger("hil.observe")

SIP_PORT = 5060
ENDED = frozenset({"logged_out", "fenced"})


# When the last byte of this thread's latest management reply arrived: a snapshot is stamped with it, not
# with the (later) moment it was parsed and written, which under load can trail by tens of milliseconds and
# make a table built before a fence look as if it were read after it.
_received = threading.local()


class ObserveError(Exception):
    """A device did not answer its management query (a lab fact, recorded, never a verdict by itself)."""


# -- readers ---------------------------------------------------------------------------------------------


def jsonrpc(url: str, method: str, *params: Any, timeout: float = 1.0) -> Any:
    """One Kamailio JSON-RPC 2.0 call over HTTP; the ``result``, or ObserveError."""
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            _received.t = time.monotonic()
            reply = json.loads(raw)
    except urllib.error.HTTPError as e:
        try:
            reply = json.loads(e.read())
        except ValueError:
            raise ObserveError(f"{url}: HTTP {e.code}") from None
    except (OSError, ValueError) as e:
        raise ObserveError(f"{url}: {e}") from None
    if not isinstance(reply, dict) or "error" in reply:
        err = reply.get("error") if isinstance(reply, dict) else reply
        raise ObserveError(f"{url}: {method}: {err}")
    return reply.get("result")


def parse_ul_dump(result: Any) -> list[dict[str, Any]]:
    """``ul.dump`` (full) -> ``[{"extension", "contact", "expires"}]``, one entry per contact."""
    out: list[dict[str, Any]] = []
    for dom in (result or {}).get("Domains") or []:
        for aor in (dom.get("Domain") or {}).get("AoRs") or []:
            info = aor.get("Info") or aor
            ext = info.get("AoR")
            for c in info.get("Contacts") or []:
                contact = c.get("Contact") or {}
                out.append(
                    {
                        "extension": str(ext),
                        "contact": contact.get("Address"),
                        "expires": contact.get("Expires"),
                    }
                )
    return out


def pbx_registrations(url: str, timeout: float = 1.0) -> list[dict[str, Any]]:
    """Every contact in a PBX's location table."""
    return parse_ul_dump(jsonrpc(url, "ul.dump", timeout=timeout))


def cti_query(host: str, port: int, msg: dict[str, Any], timeout: float = 1.0) -> dict[str, Any]:
    """One CTI request on a fresh connection (newline-delimited JSON); its reply."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(json.dumps(msg).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
            _received.t = time.monotonic()
    except OSError as e:
        raise ObserveError(f"cti {host}:{port}: {e}") from None
    try:
        reply = json.loads(buf)
    except ValueError:
        raise ObserveError(f"cti {host}:{port}: no JSON reply ({len(buf)} bytes)") from None
    if not isinstance(reply, dict) or reply.get("type") == "error":
        raise ObserveError(f"cti {host}:{port}: {reply}")
    return reply


def cti_sessions(host: str, port: int, timeout: float = 1.0) -> list[dict[str, Any]]:
    """Every session a CTI holds, trimmed to what the checkers read."""
    reply = cti_query(host, port, {"type": "sessions", "id": 1}, timeout)
    keep = ("agent", "state", "epoch", "extension", "linked", "phone")
    return [{k: s[k] for k in keep if k in s} for s in reply.get("sessions") or []]


# -- endpoints of a lab ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One thing the observer polls: a PBX's registrations or a CTI's sessions."""

    kind: str  # "pbx" or "cti"
    device: str
    site: str
    host: str
    port: int

    @property
    def obs_kind(self) -> str:
        return f"{self.kind}_snapshot"

    @property
    def rpc_url(self) -> str:
        """A PBX's JSON-RPC URL (kamailio's jsonrpcs over HTTP)."""
        return f"http://{self.host}:{self.port}/RPC"

    def read(self, timeout: float) -> dict[str, Any]:
        """The snapshot value for the history (docs/history.md)."""
        if self.kind == "pbx":
            return {"site": self.site, "registrations": pbx_registrations(self.rpc_url, timeout)}
        return {"site": self.site, "sessions": cti_sessions(self.host, self.port, timeout)}

    def read_timed(self, timeout: float) -> tuple[dict[str, Any], float, float]:
        """(value, when the request was sent, when the reply's last byte arrived). The table the device
        sent is from some moment in between; ``read_ms`` in the value says how wide that window is."""
        t_sent = time.monotonic()
        _received.t = None
        value = self.read(timeout)
        t_recv = _received.t or time.monotonic()
        value["read_ms"] = round((t_recv - t_sent) * 1000, 1)
        return value, t_sent, t_recv


def endpoints(lab: Lab) -> list[Endpoint]:
    """Every PBX and CTI of the lab, at the address the controller reaches (management if it has one)."""
    out = []
    for d in lab.topology.of_kind("pbx"):
        out.append(Endpoint("pbx", d.name, d.site, d.control_address, d.spec.rpc_port))
    for d in lab.topology.of_kind("cti"):
        out.append(Endpoint("cti", d.name, d.site, d.control_address, d.spec.port))
    return out


def roster(lab: Lab) -> dict[str, Any]:
    """Who is who, recorded once so the history is self-contained."""
    return {"agents": {a.id: {"site": a.home, "extension": a.extension} for a in lab.topology.agents()}}


def lab_snapshot(lab: Lab) -> dict[str, Any]:
    """Links and processes of the lab, compared at start and end by check_faults_healed.

    A process is ``running`` when active and answering; PIDs are left out on purpose: a healed kill
    restarts the process under a new PID, and that is the lab as it began.
    """
    st = lab.status()
    if st is None:
        return {"links": {}, "processes": {}, "management": {}, "complete": False, "problems": ["no status"]}
    links = {f"{x.switch}:{x.port}": x.state for x in st.links if x.connects}
    procs = {}
    for p in st.processes:
        state = p.state
        if state == "active" and p.answers is False:
            state = "not_answering"
        procs[f"{p.device}:{p.name}"] = "running" if state == "active" else state
    mgmt = {m.device: m.state for m in st.management}
    return {
        "links": links,
        "processes": procs,
        "management": mgmt,
        "complete": st.complete,
        "problems": st.problems,
    }


def record_start(lab: Lab, history: History) -> None:
    """The two observations every run begins with: the lab as it is, and the roster."""
    history.observe("lab_snapshot", "controller", lab_snapshot(lab))
    history.observe("roster", "topology", roster(lab))


# -- the view of where agents are ------------------------------------------------------------------------


@dataclass
class View:
    """The latest snapshot of every endpoint: who is registered and logged in where."""

    regs: dict[str, Counter[str]] = field(default_factory=dict)  # site -> extension -> contacts
    sessions: dict[str, dict[str, str]] = field(default_factory=dict)  # site -> agent -> state
    at: dict[str, float] = field(default_factory=dict)  # "pbx:sha" -> monotonic time of the snapshot
    errors: dict[str, str] = field(default_factory=dict)  # "pbx:sha" -> why the last read failed

    def apply(self, ep: Endpoint, value: dict[str, Any], t: float) -> None:
        if ep.kind == "pbx":
            self.regs[ep.site] = Counter(r["extension"] for r in value["registrations"])
        else:
            self.sessions[ep.site] = {
                s["agent"]: s.get("state", "") for s in value["sessions"] if s.get("state") not in ENDED
            }
        self.at[f"{ep.kind}:{ep.site}"] = t
        self.errors.pop(f"{ep.kind}:{ep.site}", None)

    def forget(self, ep: Endpoint, error: str) -> None:
        """An endpoint stopped answering: drop its last table, so a wait never passes on stale data."""
        (self.regs if ep.kind == "pbx" else self.sessions).pop(ep.site, None)
        self.at.pop(f"{ep.kind}:{ep.site}", None)
        self.errors[f"{ep.kind}:{ep.site}"] = error

    def placement(self, agent: str, extension: str) -> tuple[list[str], list[str], str | None]:
        """(sites registering the extension, once per contact; sites with a session; a session's state)."""
        reg_at = sorted(s for s, c in self.regs.items() for _ in range(c.get(extension, 0)))
        sess_at = sorted(s for s, t in self.sessions.items() if agent in t)
        state = next((self.sessions[s][agent] for s in sess_at), None)
        return reg_at, sess_at, state

    def misplaced(
        self,
        expected: Mapping[str, str],
        extensions: Mapping[str, str],
        states: Iterable[str] | None = ("ready",),
    ) -> dict[str, dict[str, Any]]:
        """Agents not (exactly once registered and logged in at their expected site, in one of ``states``)."""
        return self._judge(expected, extensions, states, exactly_there=True)

    def missing(
        self,
        expected: Mapping[str, str],
        extensions: Mapping[str, str],
        states: Iterable[str] | None = ("ready",),
    ) -> dict[str, dict[str, Any]]:
        """Agents not yet registered and logged in at their expected site (in one of ``states``). Looser
        than :meth:`misplaced`: a leftover elsewhere does not count here (the checkers judge it)."""
        return self._judge(expected, extensions, states, exactly_there=False)

    def _judge(
        self,
        expected: Mapping[str, str],
        extensions: Mapping[str, str],
        states: Iterable[str] | None,
        exactly_there: bool,
    ) -> dict[str, dict[str, Any]]:
        want_states = None if states is None else set(states)
        bad = {}
        for agent, site in expected.items():
            reg_at, sess_at, state = self.placement(agent, extensions[agent])
            if exactly_there:
                placed = reg_at == [site] and sess_at == [site]
            else:
                placed = site in reg_at and site in sess_at
                state = self.sessions.get(site, {}).get(agent)
            if not placed or (want_states is not None and state not in want_states):
                where = {"registered_at": reg_at, "sessions_at": sess_at}
                bad[agent] = {"expected": site, **where, "state": state}
        return bad

    def complete(self, eps: Iterable[Endpoint]) -> bool:
        return all(f"{e.kind}:{e.site}" in self.at for e in eps)


def read_view(eps: list[Endpoint], timeout: float = 1.0) -> View:
    """One snapshot of every endpoint at once (in parallel), not recorded: for set-up waits."""
    view = View()
    with ThreadPoolExecutor(max_workers=max(1, len(eps))) as pool:
        futs = {pool.submit(ep.read, timeout): ep for ep in eps}
        for fut, ep in futs.items():
            try:
                view.apply(ep, fut.result(), time.monotonic())
            except ObserveError as e:
                view.forget(ep, str(e))
    return view


def wait_view(
    eps: list[Endpoint],
    predicate: Callable[[View], bool],
    timeout: float,
    interval: float = 0.2,
) -> tuple[bool, View]:
    """Poll until ``predicate(view)`` holds (True) or ``timeout`` passes (False, with the last view)."""
    deadline = time.monotonic() + timeout
    while True:
        view = read_view(eps)
        if predicate(view):
            return True, view
        if time.monotonic() >= deadline:
            return False, view
        time.sleep(interval)


# -- the poller ------------------------------------------------------------------------------------------


class Observer:
    """Polls every PBX and CTI of a lab at ``hz`` into the history, one thread per endpoint.

    One thread per endpoint so a dead PBX (its reads time out) never delays the snapshots of the others.
    A failed read is not a snapshot: it is recorded once as an ``observe_error`` observation when the
    endpoint stops answering (and ``observe_ok`` when it answers again), so the checkers see a gap, not an
    empty table. The latest snapshots are kept as a :class:`View` for :meth:`wait_until`.
    """

    def __init__(
        self,
        lab: Lab,
        history: History,
        hz: float = 5.0,
        timeout: float = 0.5,
        eps: list[Endpoint] | None = None,
    ) -> None:
        self.lab = lab
        self.history = history
        self.interval = 1.0 / hz
        self.timeout = timeout
        self.eps = eps if eps is not None else endpoints(lab)
        self.view = View()
        self.reads = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Observer:
        for ep in self.eps:
            t = threading.Thread(target=self._loop, args=(ep,), name=f"observe-{ep.device}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _loop(self, ep: Endpoint) -> None:
        failing = False
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                value, t_sent, t_recv = ep.read_timed(self.timeout)
            except ObserveError as e:
                if not failing:
                    self.history.observe("observe_error", ep.device, {"site": ep.site, "error": str(e)})
                    failing = True
                with self._cond:
                    self.view.forget(ep, str(e))
                    self._cond.notify_all()
            else:
                wall = time.time() - (time.monotonic() - t_recv)
                self.history.observe(ep.obs_kind, ep.device, value, t=t_recv, wall=wall)
                if failing:
                    self.history.observe("observe_ok", ep.device, {"site": ep.site})
                    failing = False
                with self._cond:
                    # freshness counts from the request: the table is from no earlier than that
                    self.view.apply(ep, value, t_sent)
                    self.reads += 1
                    self._cond.notify_all()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def fresh(self, since: float) -> bool:
        """Every endpoint has a snapshot whose read was sent after ``since`` (so its table is newer)."""
        return all(self.view.at.get(f"{e.kind}:{e.site}", -1.0) > since for e in self.eps)

    def after_read(self, seen: int, judge: Callable[[View], T], timeout: float = 0.1) -> tuple[int, T | None]:
        """Wait up to ``timeout`` for a read newer than the ``seen``-th, then ``judge`` the view under the
        lock: (reads so far, the judgement), or (``seen``, None) when no read came."""
        with self._cond:
            if self.reads == seen:
                self._cond.wait(timeout)
            if self.reads == seen:
                return seen, None
            return self.reads, judge(self.view)

    def wait_until(self, predicate: Callable[[View], bool], timeout: float) -> bool:
        """Block until ``predicate`` holds on the latest snapshots (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.view):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def wait_fresh(self, timeout: float = 5.0) -> bool:
        """Wait for one new snapshot of every endpoint (a read of the state as it is now)."""
        since = time.monotonic()
        return self.wait_until(lambda _v: self.fresh(since), timeout)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 2.0)
        self._threads.clear()

    def __enter__(self) -> Observer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- capture ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapturePoint:
    """Where a capture runs: a PBX's (SIP) or a CTI's (CTI) switch port."""

    name: str  # e.g. "sha-pbx1-port"
    device: str
    site: str
    iface: str
    netns: str | None
    bpf: str


def _span_sources(lab: Lab, sw: Any) -> dict[str, Any]:
    """Ports of a switch that face a PBX or a CTI: what its SPAN session mirrors."""
    out = {}
    for pname, port in sw.spec.ports.items():
        if port.connects in lab.topology.devices and lab.topology.device(port.connects).kind in (
            "pbx",
            "cti",
        ):
            out[pname] = lab.topology.device(port.connects)
    return out


def span_points(lab: Lab) -> list[CapturePoint]:
    """One capture per site switch that has a SPAN port cabled to the controller (`span_port`,
    `capture_interface`): the controller's own interface, with a filter for that site's SIP and CTI ports.
    This is how a physical lab is captured, and the virtual lab emulates it (tc mirred)."""
    out = []
    for sw in lab.topology.of_kind("switch"):
        if not (sw.spec.span_port and sw.spec.capture_interface):
            continue
        parts = set()
        for dev in _span_sources(lab, sw).values():
            if dev.kind == "pbx":
                parts |= {f"udp port {dev.spec.sip_port}", f"tcp port {dev.spec.sip_port}"}
            else:
                parts.add(f"tcp port {dev.spec.port}")
        if parts:
            bpf = " or ".join(sorted(parts))
            out.append(
                CapturePoint(f"{sw.name}-span", sw.name, sw.site, sw.spec.capture_interface, None, bpf)
            )
    return out


_SPAN_DONE: set[tuple[str, str, bool]] = set()


def configure_span(lab: Lab, steps: Any = None) -> None:
    """Point each switch's SPAN session at its capture port, through the switch's own CLI (netmiko), once
    per lab run: sources are the ports facing the site's PBX and CTI, both directions."""
    from harness.drivers import driver_for

    run = lab.backend.run_id()
    dry = bool(steps is not None and steps.dry_run)
    for sw in lab.topology.of_kind("switch"):
        if not (sw.spec.span_port and sw.spec.capture_interface) or (run, sw.name, dry) in _SPAN_DONE:
            continue
        with driver_for(lab, sw.name, steps) as drv:
            for port in _span_sources(lab, sw):
                drv.span(port, sw.spec.span_port, session=1)
        _SPAN_DONE.add((run, sw.name, dry))


def capture_points(lab: Lab) -> list[CapturePoint]:
    """Where the scenario's captures run: the switches' SPAN ports where the topology has them (physical
    labs, and the virtual lab's default topology); otherwise, in a virtual lab, the PBX and CTI switch ports
    seen from the bridge side in the lab's core namespace."""
    spans = span_points(lab)
    if spans:
        return spans
    out = []
    for sw in lab.topology.of_kind("switch"):
        for pname, port in sw.spec.ports.items():
            if not port.connects or port.connects not in lab.topology.devices:
                continue
            dev = lab.topology.device(port.connects)
            if dev.kind == "pbx":
                bpf = f"udp port {dev.spec.sip_port} or tcp port {dev.spec.sip_port}"
            elif dev.kind == "cti":
                bpf = f"tcp port {dev.spec.port}"
            else:
                continue
            tap = lab.backend.tap(sw.name, pname)
            if tap is None:
                raise ObserveError(
                    f"{lab.topology.file}: {sw.name}:{pname} cannot be tapped on this lab and no switch has "
                    "span_port and capture_interface: nowhere to capture"
                )
            out.append(CapturePoint(f"{dev.name}-port", dev.name, dev.site, tap.iface, tap.netns, bpf))
    return out


class LabCapture:
    """One tcpdump per capture point, started together and stopped together."""

    def __init__(self, lab: Lab, out_dir: str | Path, prefix: str = "") -> None:
        self.lab = lab
        self.out_dir = Path(out_dir)
        self.points = capture_points(lab)
        self.captures = [
            Capture(f"{prefix}{p.name}", p.iface, self.out_dir, filter=p.bpf, netns_path=p.netns)
            for p in self.points
        ]
        self.results: list[CaptureResult] = []
        self.clock_offset = time.time() - time.monotonic()

    def start(self) -> LabCapture:
        if any(p.device in self.lab.topology.devices and p.name.endswith("-span") for p in self.points):
            configure_span(self.lab)
        started = []
        try:
            for c in self.captures:
                c.start()
                started.append(c)
        except BaseException:
            for c in started:
                c.stop()
            raise
        self.clock_offset = time.time() - time.monotonic()
        return self

    def stop(self) -> list[CaptureResult]:
        if not self.results:  # in parallel: each stop waits tcpdump's ring drain (~1.2 s)
            with ThreadPoolExecutor(max_workers=max(1, len(self.captures))) as pool:
                self.results = list(pool.map(lambda c: c.stop(), self.captures))
        return self.results

    def __enter__(self) -> LabCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _addresses(lab: Lab, kind: str) -> dict[str, tuple[str, str]]:
    """Data address -> (device, site) of every device of a kind."""
    return {str(d.spec.address): (d.name, d.site) for d in lab.topology.of_kind(kind)}


def cti_observations(
    decoded: Iterable[Any], cti_addr: Mapping[str, tuple[str, str]]
) -> list[tuple[Any, str, dict]]:
    """Map captured CTI messages to ``cti`` observations: (event, CTI device, value).

    Only what the CTI confirmed counts (docs/history.md): ``login_ok`` -> login, ``state_ok`` and
    ``heartbeat_ack`` -> state, ``logout_ok`` -> logout, a pushed ``fenced`` event or an ``admin_ok`` to
    the UL's ``fence`` -> fenced. Replies carry no agent, so each TCP connection is followed from its
    ``login`` (or the admin request's id) to learn whose it is; a connection opened before the capture
    began stays anonymous, and the snapshots cover it.
    """
    conns: dict[tuple[str, str], dict[str, Any]] = {}
    out = []
    for ev in decoded:
        if ev.protocol != "cti":
            continue
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
            continue
        agent = conn.get("agent")
        value: dict[str, Any] | None = None
        if typ == "admin_ok" and body.get("op") == "fence":
            # the UL fenced a session here (a newer login elsewhere): the CTI confirms it ended
            fenced = conn.get("fencing", {}).pop(json.dumps(body.get("id")), None)
            if fenced and body.get("fenced"):
                out.append((ev, device, {"event": "fenced", "site": site, "agent": fenced}))
            continue
        if typ == "login_ok":
            conn["agent"] = agent = str(body.get("agent") or agent)
            conn["epoch"] = body.get("epoch")
            value = {"event": "login", "state": body.get("state")}
        elif typ in ("state_ok", "heartbeat_ack") and body.get("state"):
            value = {"event": "state", "state": body["state"]}
            if body.get("epoch") is not None:
                conn["epoch"] = body["epoch"]
        elif typ == "logout_ok":
            value = {"event": "logout"}
        elif typ == "event" and body.get("event") == "fenced":
            value = {"event": "fenced"}
        if value is None or agent is None:
            continue
        value.update({"site": site, "agent": agent, "epoch": conn.get("epoch")})
        out.append((ev, device, {k: v for k, v in value.items() if v is not None}))
    return out


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


def record_capture(
    lab: Lab, history: History, capture: LabCapture, decode: bool = True
) -> dict[str, Decoded]:
    """Stop the capture, record each point's ``capture_stats``, and its decoded SIP and CTI messages with
    their own (packet) times converted to the controller's monotonic clock."""
    results = capture.stop()
    decoded: dict[str, Decoded] = {}
    pbx_addr, cti_addr = _addresses(lab, "pbx"), _addresses(lab, "cti")
    cti_ports = sorted({d.spec.port for d in lab.topology.of_kind("cti")})
    sip_ports = sorted({d.spec.sip_port for d in lab.topology.of_kind("pbx")})
    for point, res in zip(capture.points, results, strict=True):
        stats = res.to_dict()
        stats["capture"] = res.name
        if decode and res.pcap_path.exists() and res.pcap_path.stat().st_size > 24:
            dec = decode_pcap(res.pcap_path, sip_ports=sip_ports, cti_ports=cti_ports)
            decoded[point.name] = dec
            stats["decode"] = dec.stats_dict()
            stats["lossless"] = dec.stats.lossless
            stats["packets"] = res.packets_captured
            is_pbx = point.device in {dev for dev, _ in pbx_addr.values()}
            kind = "sip" if is_pbx else "cti"
            mapped = (
                sip_observations(dec.events, pbx_addr) if is_pbx else cti_observations(dec.events, cti_addr)
            )
            for ev, device, value in mapped:
                history.observe(kind, device, value, t=ev.time - capture.clock_offset, wall=ev.time)
        history.observe("capture_stats", point.device, stats)
    return decoded


# -- speaking to a CTI as a (misbehaving) client ---------------------------------------------------------


def forged_token(agent: str, site: str, extension: str, epoch: int | None = None) -> str:
    """A token shaped as the UL issues them (docs/cti-protocol.md) but signed with a key the lab never
    had: a CTI must refuse it (``token_invalid``)."""
    import base64
    import hashlib
    import hmac
    import secrets

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"agent": agent, "site": site, "epoch": epoch or now * 1000, "ext": extension,
              "iat": now, "exp": now + 600}  # fmt: skip
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secrets.token_bytes(32), body.encode(), hashlib.sha256).digest()
    return f"{body}.{b64(sig)}"


def cti_exchange(host: str, port: int, lines: list[bytes], timeout: float = 2.0) -> list[Any]:
    """Send raw lines on one CTI connection and read what comes back until it goes quiet or closes:
    the replies (JSON objects, or raw bytes that are not JSON), then ``"closed"`` if the server closed."""
    out: list[Any] = []
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        for line in lines:
            try:
                s.sendall(line)
            except OSError:
                out.append("closed")
                return out
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                out.extend(_lines(buf))
                out.append("closed")
                return out
            buf += chunk
        out.extend(_lines(buf))
    return out


def _lines(buf: bytes) -> list[Any]:
    res: list[Any] = []
    for raw in buf.split(b"\n"):
        if raw.strip():
            try:
                res.append(json.loads(raw))
            except ValueError:
                res.append(raw[:200].decode(errors="replace"))
    return res
