"""The emulated phone's vendor management APIs (Yealink-style, Poly-style) and its standalone process,
against real Kamailio PBXs on 127.0.0.1 (virtual/pbx.py).

Why real: an agent client moves its phone to the other site through these APIs; only the PBX's own
bindings (read over its JSON-RPC) show that the move happened. Ports: PBXs as tests/kamailio_pbx.py,
APIs 26120-26122, phone sockets 26138-26140.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from kamailio_pbx import (
    A_RPC,
    A_SIP,
    B_RPC,
    B_SIP,
    EXTS,
    HOST,
    contacts,
    no_contacts,
    until,
)

from stack.phone.api import make_app
from stack.phone.control import HttpPhoneControl
from stack.phone.ua import Phone, PhoneEvent, SipEndpoint
from virtual import pbx
from virtual.pbx import PbxSpec

pytestmark = pytest.mark.skipif(not os.access(pbx.KAMAILIO, os.X_OK), reason="kamailio not installed")
ROOT = Path(__file__).resolve().parents[1]


def _basic(user: str, pw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}


async def _serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    return runner


def test_yealink_api_reports_and_moves_the_phone(pbx_a: PbxSpec, pbx_b: PbxSpec) -> None:
    async def main() -> None:
        ep = await SipEndpoint.open(HOST, 26138)
        events: list[PhoneEvent] = []
        phone = Phone(ep, "19259", EXTS["19259"], (HOST, A_SIP), on_event=events.append)
        assert await phone.register()
        runner = await _serve(make_app("yealink", phone, "admin", "api-pw"), 26120)
        ctl = HttpPhoneControl(f"http://{HOST}:26120", "admin", "api-pw", settle_timeout=5)
        try:
            reg = await ctl.registration()
            assert reg == {
                "extension": "19259",
                "registered": True,
                "host": HOST,
                "port": A_SIP,
                "call_state": "idle",
            }
            async with aiohttp.ClientSession() as s:
                # The admin guide's bracketed form, with firmware facts.
                url = f"http://{HOST}:26120/servlet?phonecfg=get[&accounts=1][&fw=1]"
                async with s.get(url, headers=_basic("admin", "api-pw")) as r:
                    body = await r.json()
                assert body["ret"] == "ok" and body["data"]["fw"]["model"] == "SIP-T54W"
                assert body["data"]["accounts"][0]["status"] == "registered"
                async with s.get(url, headers=_basic("admin", "wrong")) as r:
                    assert r.status == 401 and "Basic" in r.headers["WWW-Authenticate"]
                async with s.get(f"http://{HOST}:26120/servlet?phonecfg=get") as r:
                    assert r.status == 401
            assert await ctl.set_server(HOST, B_SIP)
            assert await asyncio.to_thread(contacts, B_RPC, "19259") == [f"sip:19259@{HOST}:26138"]
            assert await no_contacts(A_RPC, "19259")
            assert await asyncio.to_thread(contacts, A_RPC, "19259") == []
            # Reboot: unregister, ~1 s pause, register again.
            n = len(events)
            async with aiohttp.ClientSession() as s:
                async with s.get(
                    f"http://{HOST}:26120/servlet?key=Reboot", headers=_basic("admin", "api-pw")
                ) as r:
                    assert (await r.json())["ret"] == "ok"
            assert await until(lambda: len(events) >= n + 2 and phone.registered, 10)
            assert [e.kind for e in events[n:]] == ["unregistered", "registered"]
            assert 0.9 < events[n + 1].ts - events[n].ts < 3.0
        finally:
            await ctl.close()
            await runner.cleanup()
        await phone.unregister()
        phone.close()
        ep.close()

    asyncio.run(main())


def test_poly_api_reports_and_moves_the_phone(pbx_a: PbxSpec, pbx_b: PbxSpec) -> None:
    async def main() -> None:
        ep = await SipEndpoint.open(HOST, 26139)
        events: list[PhoneEvent] = []
        phone = Phone(ep, "19260", EXTS["19260"], (HOST, B_SIP), on_event=events.append)
        assert await phone.register()
        runner = await _serve(make_app("poly", phone, "Polycom", "456"), 26121)
        base = f"http://{HOST}:26121/api/v1"
        auth = _basic("Polycom", "456")
        try:
            async with aiohttp.ClientSession(headers=auth) as s:
                async with s.get(f"{base}/mgmt/lineInfo") as r:
                    body = await r.json()
                assert body["Status"] == "2000"
                line = body["data"][0]
                assert line["RegistrationStatus"] == "registered" and line["UserID"] == "19260"
                assert (line["ProxyAddress"], line["Port"]) == (HOST, str(B_SIP))
                async with s.get(f"{base}/mgmt/device/info") as r:
                    info = (await r.json())["data"]
                assert info["ModelNumber"] == "VVX 450" and info["FirmwareRelease"]
                data = {"data": {"reg.1.server.1.address": HOST, "reg.1.server.1.port": str(A_SIP)}}
                async with s.post(f"{base}/mgmt/config/set", json=data) as r:
                    assert (await r.json())["Status"] == "2000"
                assert await until(lambda: phone.registered and phone.registrar == (HOST, A_SIP), 10)
                assert await asyncio.to_thread(contacts, A_RPC, "19260") == [f"sip:19260@{HOST}:26139"]
                async with s.post(f"{base}/mgmt/config/get", json={"data": ["reg.1.server.1.port"]}) as r:
                    assert (await r.json())["data"] == {"reg.1.server.1.port": str(A_SIP)}
                async with s.post(
                    f"{base}/mgmt/config/set", json={"data": {"reg.1.server.1.port": "x"}}
                ) as r:
                    assert r.status == 400 and (await r.json())["Status"] == "4000"
                async with s.get(f"{base}/webCallControl/callStatus") as r:
                    assert (await r.json())["Status"] == "4007"
                n = len(events)
                async with s.post(f"{base}/mgmt/safeRestart") as r:
                    assert (await r.json())["Status"] == "2000"
                assert await until(lambda: len(events) >= n + 2 and phone.registered, 10)
                assert [e.kind for e in events[n:]] == ["unregistered", "registered"]
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{base}/mgmt/lineInfo", headers=_basic("Polycom", "nope")) as r:
                    assert r.status == 401
        finally:
            await runner.cleanup()
        await phone.unregister()
        phone.close()
        ep.close()

    asyncio.run(main())


def test_standalone_phone_process(pbx_a: PbxSpec) -> None:
    env = dict(os.environ, TEST_SIP_PW=EXTS["19261"], TEST_API_PW="s3cret-api")
    argv = [
        sys.executable,
        "-m",
        "stack.phone",
        "--extension",
        "19261",
        "--password-env",
        "TEST_SIP_PW",
        "--registrar",
        f"{HOST}:{A_SIP}",
        "--sip-bind",
        f"{HOST}:26140",
        "--api-bind",
        f"{HOST}:26122",
        "--vendor",
        "poly",
        "--api-user",
        "admin",
        "--api-password-env",
        "TEST_API_PW",
    ]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        req = urllib.request.Request(
            f"http://{HOST}:26122/api/v1/mgmt/lineInfo", headers=_basic("admin", "s3cret-api")
        )
        status = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(req, timeout=1) as r:
                    status = json.loads(r.read())["data"][0]["RegistrationStatus"]
                if status == "registered":
                    break
            except OSError:
                pass
            time.sleep(0.05)
        assert status == "registered"
        assert contacts(A_RPC, "19261") == [f"sip:19261@{HOST}:26140"]
    finally:
        proc.terminate()  # SIGTERM: the phone unregisters and exits
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()
    assert contacts(A_RPC, "19261") == []
    log = err.decode()
    assert '"event": "registered"' in log and '"event": "unregistered"' in log
    assert EXTS["19261"] not in log and "s3cret-api" not in log
