"""Where a scenario's captures run: the switches' SPAN ports, or (virtual lab) the ports themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.faults import Change, Injector, SpanSession
from harness.lab import Lab
from harness.observe.readers import ObserveError

__all__ = ["CapturePoint", "capture_points", "configure_span", "span_points", "span_sources"]


@dataclass(frozen=True)
class CapturePoint:
    """Where a capture runs: a PBX's (SIP) or a CTI's (CTI) switch port."""

    name: str  # e.g. "sha-pbx1-port"
    device: str
    site: str
    iface: str
    netns: str | None
    bpf: str
    host: str | None = None  # a capture host (the switch's `capture_host`): tcpdump runs there, over SSH


def span_sources(lab: Lab, sw: Any) -> dict[str, Any]:
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
    """One capture per site switch that has a SPAN port (`span_port`, `capture_interface`), with a filter
    for that site's SIP and CTI ports: on the controller's own interface, or on the capture host's when the
    switch names one (`capture_host`). This is how a physical lab is captured, and the virtual lab
    emulates it (tc mirred)."""
    out = []
    for sw in lab.topology.of_kind("switch"):
        if not (sw.spec.span_port and sw.spec.capture_interface):
            continue
        parts = set()
        for dev in span_sources(lab, sw).values():
            if dev.kind == "pbx":
                parts |= {f"udp port {dev.spec.sip_port}", f"tcp port {dev.spec.sip_port}"}
            else:
                parts.add(f"tcp port {dev.spec.port}")
        if parts:
            bpf = " or ".join(sorted(parts))
            iface, host = sw.spec.capture_interface, sw.spec.capture_host
            out.append(CapturePoint(f"{sw.name}-span", sw.name, sw.site, iface, None, bpf, host))
    return out


def configure_span(lab: Lab, injector: Injector) -> list[Change]:
    """Point each switch's SPAN session at its SPAN port, cabled to the controller or to its capture host
    (sources: the ports facing the site's PBX and
    CTI, both directions), as a change through ``injector``: refused if unsafe, journaled, read back, and
    removed when the injector heals it (its owner's end, or `hil lab restore` after a crash). A session the
    injector holds already is kept; in a dry run each is planned, nothing is sent."""
    out: list[Change] = []
    for sw in lab.topology.of_kind("switch"):
        if not (sw.spec.span_port and sw.spec.capture_interface) or not span_sources(lab, sw):
            continue
        held = next(
            (c for c in injector.active.values() if isinstance(c, SpanSession) and c.target == sw.name), None
        )
        if held is None:
            held = injector.start(injector.make("span_session", sw.name))
        out.append(held)
    return out


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
