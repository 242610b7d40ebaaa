"""Changes the harness makes that are not faults, under the same discipline: journaled before they are
made, read back, healed at the end of their block or by `hil lab restore` after a crash.

- planned_switch: rules at the home site's UL (POST /v1/rules; heal: DELETE), judged like a fault.
- swarm_service: `systemctl restart|stop|start hil-swarm` on an agents host; heal: make sure it runs.
- span_session: a switch's SPAN session toward its span_port; heal: remove the session.
- process: a process the controller started (tcpdump); heal: SIGTERM while its PID and start time match.
- agent_session: one agent logged out at its swarm's admin API (as the person at the desk would); heal:
  logged in again. A `login` verb logs an agent in that is not (there is nothing to undo).

A planned-switch rule's id is known only after the POST: it is journaled as a note the moment the UL gives
it, and a rule whose id never reached the journal is found again by (scope, value, target).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
from typing import Any, ClassVar

import requests

from harness.credentials import STACK_SECRET_VAR
from harness.drivers.switch import SpanState
from harness.faults.base import FAULT_OPS, Change, FaultRefused, wait_for
from harness.faults.journal import proc_start, proc_state
from harness.faults.safety import SWARM_UNIT
from harness.faults.switch import config_wrap
from harness.lab import Lab
from harness.topology import Device
from harness.ulapi import SCOPES, UlClient, UlError, UlNotFound, client_for, sign_request, ul_urls

SPAN_KINDS = ("pbx", "cti")  # what a SPAN session mirrors: the ports facing the site's PBX and CTI


class PlannedSwitch(Change):
    """Planned-switch rules at the UL: agents selected by (scope, value) log in at site `to`."""

    kind = "planned_switch"
    ops: ClassVar[tuple[str, str]] = FAULT_OPS  # the checkers judge who moved from its fault.inject

    @property
    def values(self) -> list[str]:
        v = self.params.get("value")
        return [str(x) for x in v] if isinstance(v, list | tuple) else [str(v)] if v else []

    @property
    def rule_ids(self) -> dict[str, str]:
        """value -> the UL's rule id, for the rules whose id reached the journal."""
        return dict(self.notes.get("rule_ids") or {})

    def check_safety(self) -> None:
        d = self._device(self.target)
        if d.kind != "ul":
            raise FaultRefused(f"planned_switch: {self.target} is a {d.kind}, not a unified login")
        if self.params.get("scope") not in SCOPES:
            raise FaultRefused(f"planned_switch: scope must be one of {', '.join(SCOPES)}")
        if not self.values or not all(self.values):
            raise FaultRefused("planned_switch: needs value=<what the scope selects>")
        if self.params.get("to") not in self.lab.topology.sites:
            raise FaultRefused(f"planned_switch: to={self.params.get('to')!r} is not a site of this lab")

    def _triple(self, value: str) -> str:
        return f"{self.params['scope']}={value} -> {self.params['to']}"

    def plan(self) -> list[tuple[str, str]]:
        return [(self.target, f"POST /v1/rules {self._triple(v)}") for v in self.values]

    def plan_heal(self) -> list[tuple[str, str]]:
        return [(self.target, f"DELETE /v1/rules/<rule {self._triple(v)}>") for v in self.values]

    def _client(self) -> UlClient:
        return client_for(self.lab, prefer=self.site)

    def _inject(self) -> None:
        c = self._client()
        ids = self.rule_ids
        for v in self.values:
            reply = c.add_rule(str(self.params["scope"]), v, str(self.params["to"]))
            ids[v] = str(reply["rule"]["id"])
            self.note(rule_ids=dict(ids))  # at once: a crash after this POST still finds this rule

    def _ours(self, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Live rules this change made: by id where the journal has it, else by (scope, value, target)."""
        ids = self.rule_ids
        unnamed = {v for v in self.values if v not in ids}
        scope, to = self.params.get("scope"), self.params.get("to")
        return [
            r
            for r in rules
            if not r.get("removed")
            and (
                r.get("id") in ids.values()
                or (r.get("scope") == scope and r.get("target") == to and r.get("value") in unnamed)
            )
        ]

    def took_effect(self) -> bool:
        live = {r.get("id") for r in self._ours(self._client().rules())}
        return len(live) >= len(self.values)

    def _heal(self) -> None:
        c = self._client()
        for rule in self._ours(c.rules()):
            try:
                c.remove_rule(str(rule["id"]))
            except UlNotFound:
                pass  # gone already (removed at the peer, replicated here)

    def heal_took_effect(self) -> bool:
        """No UL that answers still lists one of these rules (rules replicate between the sites' ULs)."""
        answered = 0
        for url in ul_urls(self.lab).values():
            try:
                rules = UlClient(url).rules()
            except UlError:
                continue
            answered += 1
            if self._ours(rules):
                return False
        if not answered:
            raise UlError("no unified login answers: cannot read the rules back")
        return True


class SwarmService(Change):
    """The agent swarm of an agents host stopped, started or restarted; healed by making sure it runs."""

    kind = "swarm_service"
    VERBS = ("restart", "stop", "start")

    @property
    def verb(self) -> str:
        return str(self.params.get("verb", "restart"))

    def check_safety(self) -> None:
        d = self._device(self.target)
        if d.kind != "host" or getattr(d.spec, "role", None) != "agents":
            raise FaultRefused(f"swarm_service: {self.target} is not an agents host")
        if self.verb not in self.VERBS:
            raise FaultRefused(f"swarm_service: verb must be one of {', '.join(self.VERBS)}")

    def plan(self) -> list[tuple[str, str]]:
        return [(self.target, f"systemctl {self.verb} {SWARM_UNIT}")]

    def plan_heal(self) -> list[tuple[str, str]]:
        return [(self.target, f"systemctl start {SWARM_UNIT}")]

    def _run(self, command: str, action: str, check: bool = False) -> Any:
        with self._driver(self.target) as h:
            return h.run(command, action=action, check=check)

    def _main_pid(self) -> str:
        out = self._run(f"systemctl show -p MainPID --value {SWARM_UNIT}", "service_pid").stdout.strip()
        return out if out.isdigit() and out != "0" else ""

    def _active(self) -> bool:
        return self._run(f"systemctl is-active {SWARM_UNIT}", "service_state").exit_code == 0

    def _inject(self) -> None:
        if self.verb == "restart":
            self._before = self._main_pid()
        self._run(f"systemctl {self.verb} {SWARM_UNIT}", f"service_{self.verb}", check=True)

    def took_effect(self) -> bool:
        if self.verb == "stop":
            return not self._active()
        if not self._active():
            return False
        return self.verb != "restart" or self._main_pid() not in ("", getattr(self, "_before", ""))

    def _heal(self) -> None:
        self._run(f"systemctl start {SWARM_UNIT}", "service_start", check=True)

    def heal_took_effect(self) -> bool:
        return self._active()


def span_sources(lab: Lab, switch: str) -> list[str]:
    """Ports of a switch that face a PBX or a CTI: what its SPAN session mirrors."""
    sw = lab.topology.device(switch)
    out = []
    for pname, port in sw.spec.ports.items():
        peer = lab.topology.devices.get(port.connects or "")
        if peer is not None and peer.kind in SPAN_KINDS:
            out.append(pname)
    return out


class SpanSession(Change):
    """A switch's SPAN session mirroring `sources` to its SPAN port: cabled to the controller's capture NIC,
    or to the capture host's when the switch names one (`capture_host`, whose tcpdump runs there)."""

    kind = "span_session"

    @property
    def session(self) -> int:
        return int(self.params.get("session", 1))

    @property
    def sources(self) -> list[str]:
        given = self.params.get("sources")
        return [str(p) for p in given] if given else span_sources(self.lab, self.target)

    @property
    def destination(self) -> str:
        return str(self.params.get("destination") or self._device(self.target).spec.span_port)

    def check_safety(self) -> None:
        sw = self._device(self.target)
        if sw.kind != "switch" or not (sw.spec.span_port and sw.spec.capture_interface):
            raise FaultRefused(f"span_session: {self.target} has no span_port and capture_interface")
        if self.destination != sw.spec.span_port:
            raise FaultRefused(
                f"span_session: the destination must be {self.target}'s span_port {sw.spec.span_port} "
                "(a SPAN destination stops forwarding its own traffic)"
            )
        path = self.lab.topology.management_path()
        for port in [*self.sources, self.destination]:
            if port not in sw.spec.ports:
                raise FaultRefused(f"span_session: {self.target}:{port} is not a port of this topology")
        if (self.target, self.destination) in path:
            raise FaultRefused(f"span_session: {self.target}:{self.destination} is on the management path")
        if not self.sources:
            raise FaultRefused(f"span_session: {self.target} has no port facing a PBX or a CTI to mirror")

    def plan(self) -> list[tuple[str, str]]:
        drv = self._driver(self.target)
        out = []
        for src in self.sources:  # one configuration session per source, as _inject sends them
            cmds = config_wrap(drv.device_type, drv.span_commands(src, self.destination, self.session))
            out += [(self.target, c) for c in cmds]
        return out

    def plan_heal(self) -> list[tuple[str, str]]:
        drv = self._driver(self.target)
        state = SpanState(self.session, dict.fromkeys(self.sources, "both"), self.destination)
        return [(self.target, c) for c in config_wrap(drv.device_type, drv.span_remove_commands(state))]

    def _inject(self) -> None:
        with self._driver(self.target) as drv:
            for src in self.sources:
                drv.span(src, self.destination, session=self.session)

    def _state(self) -> SpanState:
        with self._driver(self.target) as drv:
            return drv.span_state(self.session)

    def took_effect(self) -> bool:
        st = self._state()
        return _same_port(st.destination, self.destination) and all(
            any(_same_port(have, want) for have in st.sources) for want in self.sources
        )

    def _heal(self) -> None:
        with self._driver(self.target) as drv:
            drv.span_remove(self.session)

    def heal_took_effect(self) -> bool:
        return bool(self._state().empty)


_SHORT = (("TenGigabitEthernet", "Te"), ("XGigabitEthernet", "XGE"), ("GigabitEthernet", "Gi"),
          ("FastEthernet", "Fa"), ("Ethernet", "Eth"), ("GE", "Gi"))  # fmt: skip


def _same_port(a: str | None, b: str | None) -> bool:
    """`GigabitEthernet0/1` and `Gi0/1` are the same port (a CLI shows either, depending on the vendor)."""
    if a is None or b is None:
        return a is b

    def short(p: str) -> str:
        for long, s in _SHORT:
            if p.startswith(long):
                return s + p[len(long) :]
        return p

    return short(a) == short(b)


class TrackedProcess(Change):
    """A process the controller started (a capture's tcpdump) that must not outlive it: healed by SIGTERM
    only while its PID still names the same process (same start time), never another one."""

    kind = "process"
    STOP_WAIT = 5.0

    @property
    def pid(self) -> int:
        return int(self.params.get("pid", 0))

    def check_safety(self) -> None:
        if self.pid <= 1 or not self.params.get("start"):
            raise FaultRefused(f"process: pid {self.params.get('pid')!r} with start time is needed")

    def plan(self) -> list[tuple[str, str]]:
        return []

    def plan_heal(self) -> list[tuple[str, str]]:
        return [("controller", f"kill -TERM {self.pid}  # {shlex.quote(self.target)}")]

    def _same(self) -> bool:
        return proc_start(self.pid) == str(self.params.get("start")) and proc_state(self.pid) not in (
            None,
            "Z",
            "X",
        )

    def _inject(self) -> None:
        return None  # its owner started it; tracking is the journal record

    def took_effect(self) -> bool:
        return self._same()

    def _heal(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self._same():
                return
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return
            if wait_for(lambda: not self._same(), self.STOP_WAIT, every=0.05):
                return

    def heal_took_effect(self) -> bool:
        return not self._same()


# Where an agents host's swarm answers its admin API (on the host's management address) when the topology
# does not say: the harness's one name for it (`swarm_admin_port`); the virtual lab starts the swarm there.
SWARM_TIMEOUT = 5.0


def swarm_admin_port(host: Device) -> int:
    """The port of an agents host's swarm admin API (the topology's `admin_port`, 8081 unless it says)."""
    return int(host.spec.admin_port)


def swarm_url(lab: Lab, agent: str) -> str:
    """The admin URL of the swarm that runs ``agent``: the agents host of its home site (FaultRefused if the
    lab has no such agent or host)."""
    site = next((a.home for a in lab.topology.agents() if a.id == agent), None)
    if site is None:
        raise FaultRefused(f"{agent!r} is not an agent of {lab.topology.name}")
    hosts = [d for d in lab.topology.of_kind("host", site) if d.spec.role == "agents"]
    if not hosts:
        raise FaultRefused(f"site {site} has no agents host to run {agent}")
    return f"http://{hosts[0].control_address}:{swarm_admin_port(hosts[0])}"


def swarm_call(
    lab: Lab, agent: str, method: str, path: str, body: bytes = b"", params: dict[str, Any] | None = None
) -> requests.Response:
    """One request to the admin API of ``agent``'s swarm; a POST signed as the UL's admin requests are (it
    changes the lab). The caller reads the status: a refusal is an answer."""
    headers: dict[str, str] = {}
    if method == "POST":
        secret = os.environ.get(STACK_SECRET_VAR, "")
        if not secret:
            raise FaultRefused(f"{STACK_SECRET_VAR} is not set (it signs the swarm's admin requests)")
        headers = sign_request(secret, method, path, body)
        if body:
            headers["Content-Type"] = "application/json"
    url = swarm_url(lab, agent) + path
    return requests.request(
        method, url, data=body or None, params=params, headers=headers, timeout=SWARM_TIMEOUT
    )


class AgentSession(Change):
    """One agent logged out (verb `logout`, healed by logging it in again) or logged in (verb `login`,
    nothing to undo), through its swarm's signed admin API: a stack event of a nemesis schedule."""

    kind = "agent_session"
    VERBS = ("logout", "login")

    @property
    def verb(self) -> str:
        return str(self.params.get("verb", "logout"))

    @property
    def site(self) -> str | None:
        return next((a.home for a in self.lab.topology.agents() if a.id == self.target), None)

    def _swarm(self) -> str:
        try:
            return swarm_url(self.lab, self.target)
        except FaultRefused as e:
            raise FaultRefused(f"agent_session: {e}") from None

    def check_safety(self) -> None:
        if self.verb not in self.VERBS:
            raise FaultRefused(f"agent_session: verb must be one of {', '.join(self.VERBS)}")
        self._swarm()

    def plan(self) -> list[tuple[str, str]]:
        return [(self.target, f"POST {self._swarm()}/agents/{self.target}/{self.verb}")]

    def plan_heal(self) -> list[tuple[str, str]]:
        if self.verb == "login":
            return []
        return [(self.target, f"POST {self._swarm()}/agents/{self.target}/login")]

    def _call(self, method: str, path: str) -> dict[str, Any]:
        """One request to the swarm's admin API (signed when it is a POST); an error unless it worked."""
        self._swarm()  # refused with this change's name before anything is sent
        r = swarm_call(self.lab, self.target, method, path)
        if r.status_code >= 400:
            raise RuntimeError(f"{r.url}: HTTP {r.status_code}: {r.text[:200]}")
        try:
            out = r.json()
        except json.JSONDecodeError:
            raise RuntimeError(f"{r.url}: not JSON: {r.text[:200]}") from None
        return out if isinstance(out, dict) else {}

    def _running(self) -> bool:
        return bool(self._call("GET", f"/agents/{self.target}").get("running"))

    def _inject(self) -> None:
        self._call("POST", f"/agents/{self.target}/{self.verb}")

    def took_effect(self) -> bool:
        return self._running() == (self.verb == "login")

    def _heal(self) -> None:
        if self.verb == "logout":
            self._call("POST", f"/agents/{self.target}/login")

    def heal_took_effect(self) -> bool:
        """Logged in again: its client runs (whether the login succeeds is the product's, judged later)."""
        return self.verb == "login" or self._running()
