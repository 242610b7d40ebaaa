"""Phone, console, power and caller drivers against the virtual lab's emulated devices (real HTTP, real ptys,
real SIP through kamailio). Every action is a logged step; a dead device is a lab fault (DeviceUnreachable),
a refusal is a DeviceError."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from harness.drivers import DeviceError, DeviceUnreachable, Step, Steps, driver_for
from harness.drivers.caller import caller_for
from harness.drivers.console import ConsoleAccess, ConsoleDriver
from harness.drivers.phone import PhoneAccess, YealinkPhone
from harness.lab import Lab, LabStatus

pytestmark = pytest.mark.lab


def eventually(pred: Callable[[], bool], timeout: float = 30.0, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


@pytest.mark.parametrize(
    "name,vendor,model", [("sha-phone1", "yealink", "SIP-T54W"), ("ntg-phone1", "poly", "VVX 450")]
)
def test_phone_registration_and_facts(lab: Lab, name: str, vendor: str, model: str) -> None:
    steps: list[Step] = []
    with driver_for(lab, name, Steps(sinks=[steps.append])) as phone:
        reg = phone.registration()
        pbx = lab.topology.of_kind("pbx", lab.topology.device(name).site)[0]
        assert reg.registered and reg.server == str(pbx.spec.address) and reg.port == 5060
        assert reg.extension == lab.topology.device(name).spec.extension
        facts = phone.facts()
        assert facts["vendor"] == vendor and facts["model"] == model and facts["firmware"] and facts["mac"]
    assert [s.action for s in steps] == ["registration", "facts"] and all(s.ok for s in steps)
    assert all(s.device == name and s.t_end is not None and s.t_end >= s.t_start for s in steps)


def test_poly_moves_to_the_other_pbx_and_back(lab: Lab) -> None:
    home, other = (str(lab.topology.device(p).spec.address) for p in ("ntg-pbx1", "sha-pbx1"))
    with driver_for(lab, "ntg-phone1") as phone:
        phone.set_sip_server(other)
        try:
            assert eventually(lambda: (r := phone.registration()).registered and r.server == other)
        finally:
            phone.set_sip_server(home)
        assert eventually(lambda: (r := phone.registration()).registered and r.server == home)


def test_yealink_reboot_reregisters(lab: Lab) -> None:
    with driver_for(lab, "sha-phone1") as phone:
        phone.reboot()
        # the phone is unregistered for about its 1 s reboot pause: poll fast enough not to miss it
        assert eventually(lambda: not phone.registration().registered, every=0.02)
        assert eventually(lambda: phone.registration().registered)


def test_phone_bad_password_is_a_device_error_not_unreachable(lab: Lab) -> None:
    d = lab.topology.device("sha-phone1")
    with YealinkPhone("sha-phone1", PhoneAccess(str(d.spec.mgmt), "admin", "wrong")) as phone:
        with pytest.raises(DeviceError, match="refused the credentials"):
            phone.registration()
    with YealinkPhone("sha-phone1", PhoneAccess(str(d.spec.mgmt), "admin", "x", port=81)) as phone:
        t0 = time.monotonic()
        with pytest.raises(DeviceUnreachable):  # nothing listens there: retried, then a lab fault
            phone.registration()
        assert time.monotonic() - t0 < 15  # retried briefly, not hung (generous for a busy machine)


@pytest.mark.parametrize("console,port", [("sha-con1", "Gi0/7"), ("ntg-con1", "GigabitEthernet0/0/7")])
def test_switch_console_configures_ports_out_of_band(lab: Lab, console: str, port: str) -> None:
    sw_name = lab.topology.device(console).spec.device
    with driver_for(lab, console) as con, driver_for(lab, sw_name) as ssh:
        assert con.port_state(port).admin_up
        con.port_down(port)
        try:
            assert not ssh.port_state(port).admin_up  # seen over SSH too: one switch, two ways in
            assert not con.port_state(port).admin_up
        finally:
            con.port_up(port)
        assert ssh.port_state(port).admin_up
    with driver_for(lab, console) as con:  # the line kept no mode from the last client
        assert con.port_state(port).admin_up


def test_console_unreachable_is_a_lab_fault() -> None:
    con = ConsoleDriver("nowhere", ConsoleAccess("/dev/hil-no-such-console", timeout=1.0))
    with pytest.raises(DeviceUnreachable):
        con.run(["show version"])


def test_pdu_outlets(lab: Lab) -> None:
    steps: list[Step] = []
    with driver_for(lab, "sha-pdu1", Steps(sinks=[steps.append])) as pdu:
        assert all(pdu.outlet_state(o) for o in ("1", "2", "3", "4"))
        with pytest.raises(DeviceError, match="E102"):
            pdu.outlet_off("9")
        pdu.outlet_off("3")
        try:
            assert not pdu.outlet_state("3")
            st = lab.status()
            assert st is not None
            ul = [p for p in st.processes if p.device == "sha-ul1"]
            assert ul and all(p.state != "active" for p in ul)
        finally:
            pdu.outlet_on("3")
        assert pdu.outlet_state("3")
    assert [s.commands for s in steps][:2] == [["olStatus 1"], ["olStatus 2"]]
    assert eventually(
        lambda: all(
            p.state == "active" for p in (lab.status() or LabStatus()).processes if p.device == "sha-ul1"
        )
    )


def test_caller_answered_no_answer_busy_failed(lab: Lab) -> None:
    # The caller registers at sha-pbx1 with ntg-phone1's extension: that phone is registered at ntg-pbx1,
    # so nothing here displaces it (each PBX has its own location table).
    caller = caller_for(lab, "sha-caller1", "sha-pbx1")
    r = caller.call("19001", hold=0.3)
    assert r.outcome == "answered" and r.status == 200 and r.rtp, r
    assert 0 < r.ringing_s <= r.answered_s < r.ended_s  # type: ignore[operator]

    r = caller.call("19001", ring_timeout=0.5)  # the phone answers after 1 s: too late
    assert r.outcome == "no_answer" and r.status == 487, r

    r = caller.call("19999")  # nobody has that extension
    assert r.outcome == "failed" and r.status == 404, r

    first: dict[str, object] = {}
    t = threading.Thread(target=lambda: first.update(r=caller.call("19001", hold=2.5, sip_port=5064)))
    t.start()
    assert eventually(lambda: "r" in first or _in_call(lab), every=0.05)
    r = caller.call("19001", sip_port=5066)
    t.join()
    assert r.outcome == "busy" and r.status == 486, r
    assert first["r"].outcome == "answered"  # type: ignore[attr-defined]


def _in_call(lab: Lab) -> bool:
    with driver_for(lab, "sha-phone1") as phone:
        data = phone._request("call_state", "GET", "/servlet?phonecfg=get&accounts=0")
    return data.get("data", {}).get("call_state") not in (None, "idle")


@pytest.mark.parametrize(
    "switch,sources,dest",
    [
        ("sha-sw1", ["Gi0/1", "Gi0/2"], "Gi0/23"),
        ("ntg-sw1", ["GigabitEthernet0/0/1", "GigabitEthernet0/0/2"], "GigabitEthernet0/0/23"),
    ],
)
def test_span_session_read_back_and_removed(lab: Lab, switch: str, sources: list[str], dest: str) -> None:
    """SPAN set up, read back from the switch's own show command, removed whatever of it is there, and a
    second removal (nothing configured) sends nothing."""
    steps: list[Step] = []
    with driver_for(lab, switch, Steps(sinks=[steps.append])) as sw:
        assert sw.span_state(2).empty
        for src in sources:
            sw.span(src, dest, session=2)
        st = sw.span_state(2)
        assert st.destination is not None and st.destination.endswith(dest.split("Ethernet")[-1])
        assert sorted(st.sources.values()) == ["both", "both"] and len(st.sources) == 2
        sw.span_remove(2)
        assert sw.span_state(2).empty
        steps.clear()
        sw.span_remove(2)
    assert [s.action for s in steps] == ["span_state"] * len(sw.span_state_commands(2))
