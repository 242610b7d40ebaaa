"""Allure attachments, categories, environment, pictures, and the HTML report rendered in headless Chromium.

The end-to-end test runs a tiny pytest session with allure-pytest over sample scenarios that use
`harness.report` on recorded histories and a pcap made here with scapy, builds the report with Allure 3,
serves it on 127.0.0.1 and reads the rendered DOM.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness import checks, plots, report
from harness.checks import Verdict
from harness.decode import decode_pcap
from harness.drivers.base import DeviceUnreachable
from harness.history import History, HistoryError

HERE = Path(__file__).parent
HIST = HERE / "histories"
TOPOLOGY = HERE.parent / "topologies" / "virtual-two-site.yaml"
BOUND = 10.0


def load(name: str) -> list[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(History.load(HIST / f"{name}.jsonl"))


def standard(name: str, bound: float = BOUND) -> list[Verdict]:
    h = load(name)
    return [
        checks.check_single_registration(h),
        checks.depends_on_capture(checks.check_no_split_brain)(h),
        checks.depends_on_capture(checks.check_recovery_time)(h, bound=bound),
        checks.check_no_lost_call(h),
        checks.check_faults_healed(h),
        checks.check_capture_complete(h),
    ]


# -- failure messages -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "bound", "first"),
    [
        ("invalid_lost_agent", BOUND, report.DEFECT_LOST_AGENT),
        ("invalid_split_brain", 40.0, report.DEFECT_SPLIT_BRAIN),
        ("invalid_double_registration", 40.0, report.DEFECT_DOUBLE_REGISTRATION),
        ("invalid_rto_over_bound", BOUND, report.DEFECT_OVER_BOUND),
        ("invalid_lost_call", 40.0, report.DEFECT_LOST_CALL),
        ("invalid_unhealed_fault", 40.0, report.LAB_FAULT_NOT_HEALED),
        ("unknown_capture_drops", BOUND, report.LAB_CAPTURE_DROPS),
        ("unknown_no_fault", BOUND, report.INCOMPLETE_UNKNOWN),
    ],
)
def test_failure_message_names_the_worst_finding_first(history: str, bound: float, first: str) -> None:
    vs = standard(history, bound)
    msg = report.failure_message(vs)
    assert msg.startswith(first + ": "), msg
    # a composed verdict says the same as its parts
    assert report.failure_message(checks.compose(*vs)) == msg


def test_valid_run_and_counts() -> None:
    vs = standard("valid_pbx_failover")
    assert checks.compose(*vs).valid
    assert report.failure_message(vs) == "all 6 checks valid"
    lost = report.findings(standard("invalid_lost_agent"))
    assert {f.agents for f in lost if f.prefix == report.DEFECT_LOST_AGENT} == {("a00002",)}
    assert all(f.category == "defect" for f in lost)
    assert {f.kind for f in lost} == {"lost_agent"} and report.worst(lost) == "defect"
    drops = report.findings(standard("unknown_capture_drops"))
    assert [f.category for f in drops] == ["lab"] * 3 and {f.kind for f in drops} == {"capture_drops"}
    assert report.worst([]) is None


@pytest.mark.parametrize(
    ("history", "bound", "category", "kinds"),
    [
        ("invalid_lost_agent", BOUND, "defect", {"lost_agent"}),
        ("invalid_split_brain", 40.0, "defect", {"split_brain"}),
        ("invalid_double_registration", 40.0, "defect", {"double_registration"}),
        ("invalid_rto_over_bound", BOUND, "defect", {"recovery_over_bound"}),
        ("invalid_lost_call", 40.0, "defect", {"lost_call"}),
        ("invalid_unhealed_fault", 40.0, "lab", {"fault_not_healed"}),
        ("unknown_capture_drops", BOUND, "lab", {"capture_drops"}),
        ("unknown_no_fault", BOUND, "incomplete", {"verdict_unknown"}),
        ("valid_pbx_failover", BOUND, "pass", set()),
    ],
)
def test_verdict_file_carries_each_findings_category_and_kind(
    history: str, bound: float, category: str, kinds: set[str]
) -> None:
    vs = standard(history, bound)
    back = json.loads(json.dumps(report.verdicts_payload(vs, history=HIST / f"{history}.jsonl")))
    assert back["outcome"] == category
    fs = [report.Finding.from_dict(f) for f in back["findings"]]
    assert fs == report.findings(vs)
    assert {f.kind for f in fs if f.category == category} == kinds
    assert all(report.KINDS[f.kind][0] == f.category for f in fs)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ([], "must be an object"),
        ({"category": "bug", "kind": "x", "check": "c", "detail": ""}, "category: must be one of"),
        ({"category": "lab", "kind": "lost_agent", "check": "c", "detail": ""}, "does not go with kind"),
        ({"category": "defect", "kind": "", "check": "c", "detail": ""}, "kind: must be a string"),
        ({"category": "defect", "kind": "x", "check": 3, "detail": ""}, "check: must be a string"),
        ({"category": "defect", "kind": "x", "check": "c", "detail": "", "agents": "a1"}, "agents: must be"),
    ],
)
def test_finding_from_a_file_is_checked(raw: Any, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        report.Finding.from_dict(raw)
    new_kind = report.Finding.from_dict({"category": "lab", "kind": "pdu_off", "check": "c", "detail": "d"})
    assert new_kind.line() == "LAB FAULT: pdu off: c: d"  # a kind from a newer writer keeps its category


class _Declared(Exception):
    hil_category = "lab"
    hil_kind = "pdu_off"


class LabError(Exception):
    """Named as the virtual lab's LabError, which the harness may not import: matched by type name."""


def _raised_in_handler(lab: BaseException, then: BaseException) -> BaseException:
    try:
        try:
            raise lab
        except type(lab):
            raise then  # noqa: B904 - the lab fault stays the context, as with pytest.fail in an except
    except BaseException as e:
        return e


def test_run_outcome_by_exception_type_never_by_message() -> None:
    dead = DeviceUnreachable("sha-sw1", "port_down", "timed out")
    lost = standard("invalid_lost_agent")
    drops = standard("unknown_capture_drops")
    cases: list[tuple[BaseException | None, Any, str, tuple[str, ...]]] = [
        (dead, None, "lab", ("device_unreachable",)),
        (LabError("PRODUCT DEFECT: lost agent"), None, "lab", ("lab_error",)),  # the message is not read
        (_Declared("x"), None, "lab", ("pdu_off",)),
        (_raised_in_handler(dead, pytest.fail.Exception(report.lab_fault_message(dead))), None, "lab", ()),
        (AssertionError(report.failure_message(lost)), lost, "defect", ("lost_agent",)),
        (AssertionError(report.DEFECT_LOST_AGENT), drops, "lab", ("capture_drops",)),
        (AssertionError(report.LAB_DEVICE_UNREACHABLE), None, "defect", ("assertion",)),
        (pytest.fail.Exception("assert 2 == 1"), standard("valid_pbx_failover"), "defect", ("assertion",)),
        (HistoryError("h.jsonl:1: not UTF-8 text"), None, "incomplete", ("history_unreadable",)),
        (TypeError("PRODUCT DEFECT"), lost, "incomplete", ("harness_error",)),
        (None, lost, "defect", ("lost_agent",)),
        (None, None, "pass", ()),
    ]
    for exc, vs, category, kinds in cases:
        got = report.run_outcome(exc, vs)
        assert got is not None and got.category == category, (exc, got)
        assert got.kinds == kinds or not kinds, (exc, got)
        assert report.outcome_labels(got)[0] == (report.OUTCOME_LABEL, category)
    assert report.run_outcome(pytest.skip.Exception("no pdu")) is None
    assert report.apply_outcome(pytest.skip.Exception("no pdu")) is None
    wrapped = report.run_outcome(_raised_in_handler(dead, RuntimeError("then this")))
    assert wrapped == report.RunOutcome("lab", ("device_unreachable",), "DeviceUnreachable")
    labels = report.outcome_labels(report.RunOutcome("defect", ("lost_agent", "lost_call")))
    assert labels == [("hil.outcome", "defect"), ("hil.kind", "lost_agent"), ("hil.kind", "lost_call")]


def test_lab_fault_message() -> None:
    msg = report.lab_fault_message(DeviceUnreachable("sha-sw1", "port_down", "timed out"))
    assert msg.startswith(report.LAB_DEVICE_UNREACHABLE + ": sha-sw1: port_down")


def test_verdicts_payload_round_trips(tmp_path: Path) -> None:
    vs = standard("invalid_lost_agent")
    p = report.verdicts_payload(
        vs, history=HIST / "invalid_lost_agent.jsonl", scenario="s", extra={"timings": 1}
    )
    back = json.loads(json.dumps(p))
    assert back["schema"] == report.VERDICTS_SCHEMA and back["result"] == "invalid" and back["timings"] == 1
    assert len(back["history"]["sha256"]) == 64
    assert report.failure_message(back["verdicts"]) == report.failure_message(vs)
    with pytest.raises(ValueError, match="result"):
        report.as_verdict({"name": "x", "result": 3, "reason": ""})


# -- categories -------------------------------------------------------------------------------------------


def _category(message: str, status: str, trace: str = "") -> str | None:
    """First category matching, as Allure 3 does (JS RegExp.test = search); also checks that Allure 2's
    whole-string match agrees."""
    for c in report.CATEGORIES:
        if status not in c.get("matchedStatuses", [status]):
            continue
        ok = True
        for key, text in (("messageRegex", message), ("traceRegex", trace)):
            if key in c:
                assert "(?" not in c[key], "JavaScript has no inline flags"
                found = re.search(c[key], text) is not None
                assert found == (re.fullmatch(c[key], text) is not None)
                ok = ok and found
        if ok:
            return str(c["name"])
    return None


@pytest.mark.parametrize(
    ("history", "bound", "category"),
    [
        ("invalid_lost_agent", BOUND, "Product defect: lost agent"),
        ("invalid_split_brain", 40.0, "Product defect: split brain"),
        ("invalid_rto_over_bound", BOUND, "Product defect: recovery over bound"),
        ("invalid_lost_call", 40.0, "Product defect: lost call"),
        ("unknown_capture_drops", BOUND, "Lab fault: capture drops"),
        ("unknown_no_fault", BOUND, "Evidence incomplete"),
    ],
)
def test_categories_tell_defects_from_lab_faults(history: str, bound: float, category: str) -> None:
    msg = f"AssertionError: {report.failure_message(standard(history, bound))}\nassert False"
    assert _category(msg, "failed") == category


def test_categories_for_exceptions(tmp_path: Path) -> None:
    exc = "harness.drivers.base.DeviceUnreachable: sha-sw1: port_down: device unreachable (timeout)"
    assert _category(exc, "broken") == "Lab fault: device unreachable"
    assert (
        _category("RuntimeError: x", "broken", trace="raise DeviceUnreachable(")
        == "Lab fault: device unreachable"
    )
    assert _category("TypeError: oops", "broken") == "Harness error (test broken)"
    assert _category("AssertionError: assert 1 == 2", "failed") == "Product defect: unclassified assertion"
    p = report.write_categories(tmp_path)
    assert json.loads(p.read_text()) == report.CATEGORIES


# -- environment and labels -------------------------------------------------------------------------------


def test_environment_properties(tmp_path: Path) -> None:
    facts = {
        "kamailio": {"sha-pbx1": "5.6.3 (x86_64/linux)"},
        "switch": {"sha-sw1": {"version": "Cisco IOS 15.2(7)E", "serial": "FOC=1:2"}},
        "phone": {"sha-phone1": {"firmware": "66.86.0.15"}},
        "note": "first line\nsecond #1",
    }
    p = report.write_environment(tmp_path, facts, topology=TOPOLOGY)
    text = p.read_text(encoding="latin-1")
    lines = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines["kamailio.sha-pbx1"] == "5.6.3 (x86_64/linux)"
    assert lines["switch.sha-sw1.serial"] == "FOC\\=1\\:2"
    assert lines["phone.sha-phone1.firmware"] == "66.86.0.15"
    assert lines["note"] == "first line\\nsecond \\#1"
    assert lines["topology.name"] and lines["topology.agents"] == "100"
    assert {"hil", "python", "netmiko"} <= lines.keys()


def test_labels() -> None:
    got = report.labels(
        epic="Failover", feature="Unplanned", story="PBX killed", severity="critical", site=["sha"]
    )
    assert got == [
        ("epic", "Failover"),
        ("feature", "Unplanned"),
        ("story", "PBX killed"),
        ("severity", "critical"),
        ("site", "sha"),
    ]
    with pytest.raises(ValueError, match="severity"):
        report.labels(severity="urgent")


# -- pictures ---------------------------------------------------------------------------------------------

PHONE = {"1001": "198.18.1.11", "1002": "198.18.1.12"}
AGENTS_HOST = "198.18.1.100"
PBX = {"sha": "198.18.1.10", "ntg": "198.18.2.10"}
CTI = {"sha": "198.18.1.20", "ntg": "198.18.2.20"}
CTI_PORT = 7000


def _sip(start: str, ext: str, call_id: str, cseq: int, method: str, contact: str | None) -> bytes:
    h = [
        f"Via: SIP/2.0/UDP {PHONE[ext]}:5060;branch=z9hG4bK-{call_id}-{cseq}",
        f"From: <sip:{ext}@lab>;tag=f{cseq}",
        f"To: <sip:{ext}@lab>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
    ]
    if contact:
        h.append(f"Contact: <sip:{ext}@{PHONE[ext]}:5060>;expires=300")
    return ("\r\n".join([start, *h, "Content-Length: 0"]) + "\r\n\r\n").encode()


def make_pcap(path: Path, wall0: float = 1764000000.0) -> Path:
    """What the capture of `valid_pbx_failover` would hold: REGISTERs to sha before the fault, one lost
    in the fault, then REGISTER/200 at ntg and CTI logout/login for each agent, at the history's times."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    frames: list[Any] = []
    seqs: dict[tuple[str, str], int] = {}

    def add(pkt: Any, t: float) -> None:
        pkt.time = wall0 + t
        frames.append(pkt)

    def register(t: float, ext: str, site: str, cseq: int, answered: bool) -> None:
        req = _sip(f"REGISTER sip:pbx1.{site}.lab SIP/2.0", ext, f"reg-{ext}", cseq, "REGISTER", "c")
        add(Ether() / IP(src=PHONE[ext], dst=PBX[site]) / UDP(sport=5060, dport=5060) / Raw(req), t)
        if answered:
            ok = _sip("SIP/2.0 200 OK", ext, f"reg-{ext}", cseq, "REGISTER", "c")
            add(Ether() / IP(src=PBX[site], dst=PHONE[ext]) / UDP(sport=5060, dport=5060) / Raw(ok), t + 0.1)

    def cti(t: float, src: str, sport: int, dst: str, dport: int, msg: dict[str, Any]) -> None:
        k = (f"{src}:{sport}", f"{dst}:{dport}")
        if k not in seqs:
            seqs[k] = 1000
            add(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, seq=999, flags="S"), t - 0.01)
        data = (json.dumps(msg) + "\n").encode()
        add(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, seq=seqs[k], flags="PA") / data, t)
        seqs[k] += len(data)

    for ext in PHONE:
        register(8.0 + int(ext[-1]) * 0.1, ext, "sha", 1, True)
    register(10.5, "1001", "sha", 2, False)
    for agent, ext, t, port in (("a00001", "1001", 13.0, 40001), ("a00002", "1002", 15.0, 40002)):
        cti(t - 0.1, AGENTS_HOST, port, CTI["sha"], CTI_PORT, {"type": "logout", "agent": agent})
        cti(t, CTI["sha"], CTI_PORT, AGENTS_HOST, port, {"type": "logout", "agent": agent, "ok": True})
        register(t + 0.4, ext, "ntg", 3, True)
        cti(t + 0.9, AGENTS_HOST, port + 10, CTI["ntg"], CTI_PORT, {"type": "login", "agent": agent})
        cti(
            t + 1.0,
            CTI["ntg"],
            CTI_PORT,
            AGENTS_HOST,
            port + 10,
            {"type": "login", "agent": agent, "ok": True},
        )
    wrpcap(str(path), frames)
    return path


def test_ladder_diagram(tmp_path: Path) -> None:
    pcap = make_pcap(tmp_path / "sample.pcap")
    events = decode_pcap(pcap, cti_ports=[CTI_PORT]).events
    assert len(events) == 2 * 2 + 1 + 2 * (2 + 4)
    h = load("valid_pbx_failover")
    faults = plots.fault_windows(h)
    assert [(f.key, f.t0, f.t1) for f in faults] == [("f1", 10.0, 61.0)]
    hosts = plots.hosts_from_topology(TOPOLOGY)
    svg = plots.ladder_svg(
        events,
        hosts=hosts,
        agents=["a00001"],
        extensions={"a00001": "1001", "a00002": "1002"},
        t_zero=faults[0].wall0,
        window=(-5.0, 10.0),
        faults=faults,
        title="pbx killed",
    )
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    for lane in ("sha-agents1", "sha-pbx1", "ntg-pbx1", "sha-cti1", "ntg-cti1", "198.18.1.11"):
        assert lane in texts
    assert "REGISTER 1001" in texts and "200 OK (REGISTER)" in texts and "login a00001" in texts
    assert "fault f1: process_kill sha-pbx1" in texts
    assert not any(t and "a00002" in t for t in texts if t and not t.startswith("12 "))  # only the sample
    arrows = [g for g in root.iter("{http://www.w3.org/2000/svg}g")]
    assert len(arrows) == 2 + 1 + 2 + 4  # before, lost, ntg REGISTER/200, CTI logout+login both ways
    empty = plots.ladder_svg([], title="none")
    assert "no SIP or CTI message" in empty


def test_timeline_and_histogram(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n"
    for name, bound in (
        ("valid_pbx_failover", BOUND),
        ("invalid_lost_agent", BOUND),
        ("invalid_rto_over_bound", 5.0),
    ):
        h = load(name)
        v = checks.check_recovery_time(h, bound=bound)
        fw = plots.fault_windows(h)[0]
        assert plots.timeline_png(v, window=fw, path=tmp_path / f"{name}.png").startswith(png)
        assert plots.histogram_png(v).startswith(png)
    lost = checks.check_recovery_time(load("invalid_lost_agent"), bound=BOUND)
    assert plots.sample_agents(lost, 3)[0] == "a00002"
    many = Verdict(
        "recovery_time", "valid", "", [], {"per_agent": {f"a{i:05d}": i / 100 for i in range(1000)}}
    )
    assert plots.sample_agents(many, 3) == ["a00000", "a00500", "a00999"]
    assert plots.timeline_png(many).startswith(png)


# -- end to end: pytest + allure-pytest -> Allure 3 -> headless Chromium ----------------------------------

SAMPLE = """
import os
from pathlib import Path

import pytest

from harness import checks, report
from harness.history import History

HIST = Path(os.environ["HIL_HISTORIES"])
PCAP = Path(os.environ["HIL_PCAP"])
TOPOLOGY = Path(os.environ["HIL_TOPOLOGY"])
LOG = Path(os.environ["HIL_LOG"])


def verdicts(name, bound=10.0):
    h = list(History.load(HIST / f"{name}.jsonl"))
    return [
        checks.check_single_registration(h),
        checks.depends_on_capture(checks.check_no_split_brain)(h),
        checks.depends_on_capture(checks.check_recovery_time)(h, bound=bound),
        checks.check_no_lost_call(h),
        checks.check_faults_healed(h),
        checks.check_capture_complete(h),
    ]


def scenario(name, history, **labels):
    report.apply_labels(epic="Failover", site="sha", **labels)
    vs = verdicts(history)
    report.attach_run(
        HIST / f"{history}.jsonl", vs, pcaps=[PCAP], logs={"sha-pbx1 kamailio": LOG},
        topology=TOPOLOGY, scenario=name,
    )
    assert checks.compose(*vs).valid, report.failure_message(vs)


def test_pbx_killed_recovers():
    scenario("pbx_killed", "valid_pbx_failover", feature="Unplanned", story="PBX killed", severity="critical")


def test_pbx_port_shut_loses_an_agent():
    scenario("pbx_port_shut", "invalid_lost_agent", feature="Unplanned", story="PBX port shut")


def test_cti_killed_capture_drops():
    scenario("cti_killed", "unknown_capture_drops", feature="Unplanned", story="CTI killed", severity="minor")
"""

CONFTEST = """
import os
from harness import report


def pytest_sessionfinish(session):
    d = session.config.option.allure_report_dir
    facts = {"kamailio": {"sha-pbx1": "5.6.3"}, "switch": {"sha-sw1": {"version": "IOS 15.2(7)E"}}}
    report.write_environment(d, facts, topology=os.environ["HIL_TOPOLOGY"])
    report.write_categories(d)
"""


def run_sample(tmp: Path) -> Path:
    """A real pytest session with allure-pytest over the sample scenarios; returns its results directory."""
    suite = tmp / "suite"
    suite.mkdir()
    (suite / "test_sample_failover.py").write_text(textwrap.dedent(SAMPLE))
    (suite / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    log = tmp / "kamailio.log"
    log.write_text("INFO: <core> [main.c:2900]: main(): kamailio 5.6.3 started\n")
    env = {
        **os.environ,
        "HIL_HISTORIES": str(HIST),
        "HIL_PCAP": str(make_pcap(tmp / "sample.pcap")),
        "HIL_TOPOLOGY": str(TOPOLOGY),
        "HIL_LOG": str(log),
        "PYTHONWARNINGS": "ignore",
    }
    results = tmp / "allure-results"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hil"]
    cmd += ["--alluredir", str(results), str(suite)]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one passes, two fail on purpose
    assert "2 failed, 1 passed" in proc.stdout, proc.stdout
    return results


@pytest.fixture(scope="module")
def sample_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_sample(tmp_path_factory.mktemp("allure"))


def _results(d: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for f in d.glob("*-result.json"):
        r = json.loads(f.read_text())
        out[r["name"]] = r
    return out


def test_sample_run_attaches_everything(sample_results: Path) -> None:
    rs = _results(sample_results)
    assert set(rs) == {
        "test_pbx_killed_recovers",
        "test_pbx_port_shut_loses_an_agent",
        "test_cti_killed_capture_drops",
    }
    ok = rs["test_pbx_killed_recovers"]
    names = {a["name"] for a in ok["attachments"]}
    assert names == {
        "hil-verdicts.json",
        "history.jsonl",
        "timeline.png",
        "recovery-histogram.png",
        "ladder.svg",
        "capture sample.pcap",
        "log sha-pbx1 kamailio",
        "topology.yaml",
    }
    for a in ok["attachments"]:
        assert (sample_results / a["source"]).stat().st_size > 0
    labels = {(lab["name"], lab["value"]) for lab in ok["labels"]}
    assert {
        ("epic", "Failover"),
        ("feature", "Unplanned"),
        ("severity", "critical"),
        ("site", "sha"),
    } <= labels
    lost = rs["test_pbx_port_shut_loses_an_agent"]
    assert lost["status"] == "failed"
    assert lost["statusDetails"]["message"].startswith("AssertionError: " + report.DEFECT_LOST_AGENT)
    vfile = next(a["source"] for a in lost["attachments"] if a["name"] == report.VERDICTS_NAME)
    payload = json.loads((sample_results / vfile).read_text())
    assert payload["outcome"] == "defect"
    assert {(f["category"], f["kind"], tuple(f["agents"])) for f in payload["findings"]} == {
        ("defect", "lost_agent", ("a00002",))
    }
    drops = rs["test_cti_killed_capture_drops"]["statusDetails"]["message"]
    assert drops.startswith("AssertionError: " + report.LAB_CAPTURE_DROPS)
    assert (sample_results / "environment.properties").exists() and (
        sample_results / "categories.json"
    ).exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _allure_missing() -> str | None:
    try:
        report.allure_cli()
    except report.ReportError as e:
        return str(e)
    return None


@pytest.fixture
def served(tmp_path: Path, sample_results: Path) -> Iterator[tuple[str, Path]]:
    """The sample's report, built with Allure 3 and served on 127.0.0.1 (Allure reports fetch data files)."""
    out = tmp_path / "allure-report"
    index = report.build_report(sample_results, out, name="hil sample")
    assert index == out / "index.html"

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/index.html", out
    finally:
        srv.shutdown()
        srv.server_close()


def dump_dom(url: str) -> str:
    """The DOM after the page's scripts ran, from headless Chromium with a fresh profile."""
    with tempfile.TemporaryDirectory(prefix="hil-chromium-") as profile:
        cmd = [
            str(_chromium()),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=8000",
            "--dump-dom",
            url,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(
    _chromium() is None, reason="chromium is not installed (make setup installs Debian's chromium)"
)
@pytest.mark.skipif(_allure_missing() is not None, reason=f"Allure 3 is not installed: {_allure_missing()}")
def test_report_renders_scenarios_and_attachments(served: tuple[str, Path]) -> None:
    url, out = served
    dom = dump_dom(url)
    for name in (
        "test_pbx_killed_recovers",
        "test_pbx_port_shut_loses_an_agent",
        "test_cti_killed_capture_drops",
    ):
        assert name in dom, f"{name} not in the rendered report"
    ids = {json.loads(f.read_text())["name"]: f.stem for f in (out / "data" / "test-results").glob("*.json")}
    page = dump_dom(f"{url}#{ids['test_pbx_killed_recovers']}")
    for att in ("hil-verdicts.json", "history.jsonl", "ladder.svg", "timeline.png", "recovery-histogram.png"):
        assert att in page, f"attachment {att} not shown"
    assert "capture sample.pcap" in page and "log sha-pbx1 kamailio" in page and "topology.yaml" in page
    assert page.count('data-testid="test-result-attachment"') == 8
    assert 'data-testid="test-result-attachment-missed"' not in page
    cats = json.loads((out / "widgets" / "categories.json").read_text())
    by_name = {n["name"]: n for n in cats["nodes"].values() if n.get("type") == "category"}
    assert by_name["Product defect: lost agent"]["statistic"] == {"total": 1, "failed": 1}
    assert by_name["Lab fault: capture drops"]["statistic"] == {"total": 1, "failed": 1}
    env = json.loads((out / "widgets" / "allure_environment.json").read_text())
    assert {"name": "kamailio.sha-pbx1", "values": ["5.6.3"]} in env


def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(report.ReportInputError, match="no such results directory"):
        report.build_report(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(report.ReportInputError, match="no test results"):
        report.build_report(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "x-result.json").write_text("{}")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("mine")
    if _allure_missing() is None:
        with pytest.raises(report.ReportInputError, match="not an Allure report"):
            report.build_report(tmp_path / "r", tmp_path / "precious")
        assert (tmp_path / "precious" / "notes.txt").exists()
