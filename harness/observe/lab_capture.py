"""The capture of a scenario: one tcpdump per capture point, and its packets recorded as observations.

Where the files go: tcpdump writes the raw captures, which hold the lab's secrets (CTI login tokens, SIP
digest responses), into ``<root>/raw/<scenario>/`` (mode 0700, with a SECRETS-README), never beside the
evidence in ``<root>/<scenario>/``: a scenario that dies before its report leaves nothing in clear there.
The report layer writes the redacted copy there (harness/report/redact.py, docs/reports.md).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.capture import Capture, CaptureResult
from harness.decode import Decoded, decode_pcap
from harness.drivers import driver_for
from harness.faults import Injector
from harness.history import History
from harness.lab import Lab
from harness.observe.points import CapturePoint, capture_points, configure_span
from harness.observe.remote_capture import RemoteCapture
from harness.observe.wire import addresses, cti_observations, sip_observations

__all__ = [
    "RAW_DIR",
    "SECRETS_README",
    "LabCapture",
    "published_path",
    "raw_dir_of",
    "raw_root_of",
    "record_capture",
]

log = logging.getLogger("hil.observe")

RAW_DIR = "raw"
SECRETS_README = "SECRETS-README.txt"
_README = """The raw captures of this run, as tcpdump wrote them: they hold the lab's secrets in clear
(CTI login tokens and admin signatures, SIP digest responses, nonces and cnonces). Keep them in
the lab; do not attach them to tickets or reports. The report has a redacted copy of each, in the
directory above this one (../<scenario>/). A physical lab keeps none unless HIL_KEEP_RAW_PCAPS=1.
"""


def raw_dir_of(out_dir: str | Path) -> Path:
    """Where the raw captures of the scenario whose evidence goes to ``out_dir`` are written."""
    out = Path(out_dir)
    return out.parent / RAW_DIR / out.name


def raw_root_of(pcap: str | Path) -> Path | None:
    """The raw directory (``<root>/raw``, with its SECRETS-README) a capture file lies in, or None."""
    root = Path(pcap).parent.parent
    return root if root.name == RAW_DIR and (root / SECRETS_README).exists() else None


def published_path(pcap: str | Path) -> Path:
    """Where the redacted copy of a capture goes: ``<root>/<scenario>/<name>`` for a raw capture
    ``<root>/raw/<scenario>/<name>``, else beside it as ``<stem>.redacted<suffix>``."""
    p = Path(pcap)
    if raw_root_of(p) is not None:
        return p.parent.parent.parent / p.parent.name / p.name
    return p.with_name(f"{p.stem}.redacted{p.suffix}")


def _prepare_raw_dir(raw: Path) -> None:
    """The raw directory and its root, readable by their owner only, and the README that says why."""
    raw.mkdir(parents=True, exist_ok=True)
    for d in (raw.parent, raw):
        os.chmod(d, 0o700)
    readme = raw.parent / SECRETS_README
    if not readme.exists():
        readme.write_text(_README)


class LabCapture:
    """One tcpdump per capture point, started together and stopped together: on the controller, or on a
    capture host over SSH (its pcap fetched into the same raw directory when it stops).

    Its changes go through an injector: the SPAN sessions it needs, and each tcpdump it starts, journaled
    by PID and start time so that `hil lab restore` stops the captures of a controller that died (and
    never another process). Given none, it uses one of its own, which removes the SPAN sessions again when
    the capture stops; a pytest session passes its own, which keeps them for the session.
    """

    def __init__(
        self,
        lab: Lab,
        out_dir: str | Path,
        prefix: str = "",
        injector: Injector | None = None,
        raw_dir: str | Path | None = None,
    ) -> None:
        self.lab = lab
        self.out_dir = Path(out_dir)  # the evidence: the redacted copies go here (harness.report)
        self.raw_dir = Path(raw_dir) if raw_dir is not None else raw_dir_of(self.out_dir)
        self.points = capture_points(lab)
        self.prefix = prefix
        self.captures: list[Capture | RemoteCapture] = []  # made at start(): a capture host's needs a login
        self.results: list[CaptureResult] = []
        self.clock_offset = time.time() - time.monotonic()
        self.injector = injector
        self._own_injector = False

    def _injector(self) -> Injector:
        if self.injector is None:
            self.injector = Injector(self.lab, out=log.info)
            self._own_injector = True
        return self.injector

    def start(self) -> LabCapture:
        _prepare_raw_dir(self.raw_dir)
        inj = self._injector()
        started: list[Capture | RemoteCapture] = []
        try:
            if any(p.device in self.lab.topology.devices and p.name.endswith("-span") for p in self.points):
                configure_span(self.lab, inj)
            self.captures = [self._capture(p) for p in self.points]
            for c in self.captures:
                if isinstance(c, Capture):  # journaled by the capture itself, as soon as tcpdump has a PID;
                    c.tracker = inj  # a capture host's PID is not ours to journal: -G bounds it there
                c.start()
                started.append(c)
        except BaseException:
            self._stop(started)
            raise
        self.clock_offset = time.time() - time.monotonic()
        return self

    def _capture(self, p: CapturePoint) -> Capture | RemoteCapture:
        name = f"{self.prefix}{p.name}"
        if p.host is None:
            return Capture(name, p.iface, self.raw_dir, filter=p.bpf, netns_path=p.netns)
        host = self.lab.topology.device(p.host)
        where = f"ssh {host.control_address}:{host.spec.ssh_port}"
        ssh = driver_for(self.lab, p.host)
        return RemoteCapture(
            name, p.iface, self.raw_dir, p.bpf, host=p.host, ssh=ssh, workdir=host.spec.workdir, where=where
        )

    def _stop(self, captures: list[Capture | RemoteCapture]) -> list[CaptureResult]:
        """Stop tcpdumps in parallel (each releases its journal entry), and heal the SPAN sessions if the
        injector is this capture's own."""
        try:
            with ThreadPoolExecutor(max_workers=max(1, len(captures))) as pool:
                results = list(pool.map(lambda c: c.stop(), captures))
            for c in captures:
                if isinstance(c, RemoteCapture):
                    c.ssh.close()  # its pcap is fetched: the capture host's login is not needed any more
            for r in results:
                try:
                    if r.pcap_path.exists():
                        os.chmod(r.pcap_path, 0o600)  # its directory is closed already: belt and braces
                except OSError as e:
                    log.warning("could not make %s private: %s", r.pcap_path, e)
            return results
        finally:
            if self.injector is not None and self._own_injector:
                self.injector.close()

    def stop(self) -> list[CaptureResult]:
        if not self.results:
            self.results = self._stop(self.captures)
        return self.results

    def __enter__(self) -> LabCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _addresses(lab: Lab, kind: str) -> dict[str, tuple[str, str]]:
    """Data address -> (device, site) of every device of a kind."""
    return {str(d.spec.address): (d.name, d.site) for d in lab.topology.of_kind(kind)}


def record_capture(
    lab: Lab, history: History, capture: LabCapture, decode: bool = True
) -> dict[str, Decoded]:
    """Stop the capture, record each point's ``capture_stats``, and its decoded SIP and CTI messages with
    their own (packet) times converted to the controller's monotonic clock."""
    results = capture.stop()
    decoded: dict[str, Decoded] = {}
    pbx_addr, cti_addr = addresses(lab, "pbx"), addresses(lab, "cti")
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
            # A SPAN point (a switch's) carries both SIP and CTI; a port point one of them: each mapping
            # keeps only its own protocol, so both run on every point.
            for kind, mapped in (
                ("sip", sip_observations(dec.events, pbx_addr)),
                ("cti", cti_observations(dec.events, cti_addr)),
            ):
                for ev, device, value in mapped:
                    history.observe(kind, device, value, t=ev.time - capture.clock_offset, wall=ev.time)
        history.observe("capture_stats", point.device, stats)
    return decoded
