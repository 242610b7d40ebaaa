"""The agent client's control of baresip (Debian's softphone) through its ctrl_tcp, against a real baresip
and real Kamailio PBXs on 127.0.0.1.

Why real: baresip is a phone this project did not write; only the PBXs' own bindings show that the control
registered it and moved it. Ports: PBXs as tests/kamailio_pbx.py, baresip SIP 26974 (TLS 26975) and
ctrl_tcp 26977.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kamailio_pbx import (
    A_RPC,
    A_SIP,
    B_RPC,
    B_SIP,
    EXTS,
    HOST,
    contacts,
    no_contacts,
)

from stack.phone.baresip import BaresipPhoneControl, netstring, parse_reginfo
from virtual import pbx
from virtual.pbx import PbxSpec
from virtual.stackservices import BARESIP_CONFIG

BARESIP = shutil.which("baresip")
SIP, CTRL = 26974, 26977  # baresip takes SIP port + 1 for SIP over TLS
EXT = "19292"

needs = pytest.mark.skipif(
    BARESIP is None or not os.access(pbx.KAMAILIO, os.X_OK), reason="baresip or kamailio not installed"
)


def test_parse_reginfo_and_netstring() -> None:
    text = (
        "\n--- User Agents (2) ---\n"
        "> sip:19011@198.18.1.10:5060                   \x1b[32mOK \x1b[;m  Expires 59s\n"
        "  sip:19011@198.18.2.10                        \x1b[33mzzz\x1b[;m  Expires 0s\n\n"
    )
    assert parse_reginfo(text) == [
        {"user": "19011", "host": "198.18.1.10", "port": 5060, "status": "OK"},
        {"user": "19011", "host": "198.18.2.10", "port": 5060, "status": "zzz"},
    ]
    assert parse_reginfo("\n--- User Agents (0) ---\n") == []
    assert netstring({"command": "reginfo"}) == b'22:{"command": "reginfo"},'


@pytest.fixture
def baresip(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """baresip as the lab runs it (the lab's config), no account; stopped by its PID."""
    assert BARESIP is not None
    (tmp_path / "accounts").write_text("")
    conf = BARESIP_CONFIG.format(
        address=HOST, sip=f"{HOST}:{SIP}", modules="/usr/lib/baresip/modules", ctrl=CTRL
    ).replace(f"127.0.0.1:{CTRL}", f"{HOST}:{CTRL}")
    (tmp_path / "config").write_text(conf)
    with open(tmp_path / "baresip.log", "wb") as log:
        proc = subprocess.Popen([BARESIP, "-f", str(tmp_path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _bound(rpc_port: int) -> list[str]:
    """Where the PBX holds the extension: one ``host:port`` per contact (baresip's contact user is the
    extension with a suffix of its own, ``19292-0x...``)."""
    out = []
    for c in contacts(rpc_port, EXT):
        user, _, where = c.removeprefix("sip:").partition("@")
        assert user.split("-")[0] == EXT
        out.append(where)
    return out


async def _ctrl_up(ctl: BaresipPhoneControl, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while "error" in await ctl.registration():
        assert asyncio.get_running_loop().time() < deadline, "baresip's ctrl_tcp never answered"
        await asyncio.sleep(0.05)


@needs
def test_control_registers_and_moves_baresip(
    pbx_a: PbxSpec, pbx_b: PbxSpec, baresip: subprocess.Popen
) -> None:
    async def main() -> None:
        ctl = BaresipPhoneControl(HOST, CTRL, EXT, EXTS[EXT], regint=60)
        wrong = BaresipPhoneControl(HOST, CTRL, "19293", "not-the-password", settle_timeout=1.0)
        try:
            await _ctrl_up(ctl)
            assert await ctl.registration() == {
                "extension": EXT, "registered": False, "host": None, "port": None, "call_state": "idle",
            }  # fmt: skip
            assert await ctl.set_server(HOST, A_SIP)
            reg = await ctl.registration()
            assert (reg["registered"], reg["host"], reg["port"]) == (True, HOST, A_SIP)
            assert await asyncio.to_thread(_bound, A_RPC) == [f"{HOST}:{SIP}"]
            assert await ctl.set_server(HOST, B_SIP)  # the failover: a new UA at B, the old one removed
            assert await asyncio.to_thread(_bound, B_RPC) == [f"{HOST}:{SIP}"]
            assert await no_contacts(A_RPC, EXT)
            # a new control (an agent client restarted) finds the UA its predecessor left
            again = BaresipPhoneControl(HOST, CTRL, EXT, EXTS[EXT])
            reg = await again.registration()
            assert (reg["registered"], reg["host"], reg["port"]) == (True, HOST, B_SIP)
            await again.close()
            # asked to register where it is already: a fresh registration, still one binding
            assert await ctl.set_server(HOST, B_SIP)
            assert await asyncio.to_thread(_bound, B_RPC) == [f"{HOST}:{SIP}"]
            # a refused password never counts as registered
            assert await wrong.set_server(HOST, A_SIP) is False
            assert (await wrong.registration())["registered"] is False
        finally:
            await ctl.close()
            await wrong.close()

    asyncio.run(main())


def test_control_of_a_baresip_that_is_not_there() -> None:
    async def main() -> None:
        ctl = BaresipPhoneControl(HOST, 9, EXT, "pw", timeout=0.5, settle_timeout=0.5)
        reg = await ctl.registration()
        assert reg["registered"] is False and "ctrl_tcp" in reg["error"]
        assert await ctl.set_server(HOST, A_SIP) is False
        await ctl.close()

    asyncio.run(main())
