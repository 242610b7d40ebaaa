"""An agent client's controls of desk phones through their vendor HTTP APIs (Yealink-style, Poly-style),
against the emulated phone's APIs and real Kamailio PBXs on 127.0.0.1, and against a phone that errs.

Why real PBXs: a control says a move worked only once the phone is registered at the new server; the PBXs'
own bindings (their JSON-RPC) show it did. Ports: PBXs as tests/kamailio_pbx.py, APIs 26970-26971, phone
sockets 26972-26973, a phone that errs 26976.
"""

from __future__ import annotations

import asyncio
import os

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
)

from stack.phone.api import make_app
from stack.phone.control import HttpPhoneControl, PhoneControl
from stack.phone.polycontrol import PolyPhoneControl
from stack.phone.ua import Phone, SipEndpoint
from virtual import pbx
from virtual.pbx import PbxSpec

pytestmark = pytest.mark.skipif(not os.access(pbx.KAMAILIO, os.X_OK), reason="kamailio not installed")


async def _serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    return runner


async def _moves(control: PhoneControl, ext: str, sip_port: int) -> None:
    """The control reads the phone at A, moves it to B (B holds it, A does not) and back."""
    reg = await control.registration()
    assert reg == {"extension": ext, "registered": True, "host": HOST, "port": A_SIP, "call_state": "idle"}
    assert await control.set_server(HOST, B_SIP)
    reg = await control.registration()
    assert (reg["registered"], reg["host"], reg["port"]) == (True, HOST, B_SIP)
    assert await asyncio.to_thread(contacts, B_RPC, ext) == [f"sip:{ext}@{HOST}:{sip_port}"]
    assert await no_contacts(A_RPC, ext)
    assert await control.set_server(HOST, A_SIP)
    assert await asyncio.to_thread(contacts, A_RPC, ext) == [f"sip:{ext}@{HOST}:{sip_port}"]
    assert await no_contacts(B_RPC, ext)


@pytest.mark.parametrize(
    ("vendor", "ext", "api", "sip"), [("yealink", "19290", 26970, 26972), ("poly", "19291", 26971, 26973)]
)
def test_control_moves_the_desk_phone_between_pbxs(
    pbx_a: PbxSpec, pbx_b: PbxSpec, vendor: str, ext: str, api: int, sip: int
) -> None:
    async def main() -> None:
        ep = await SipEndpoint.open(HOST, sip)
        phone = Phone(ep, ext, EXTS[ext], (HOST, A_SIP))
        assert await phone.register()
        runner = await _serve(make_app(vendor, phone, "admin", "api-pw"), api)
        url = f"http://{HOST}:{api}"
        kind = PolyPhoneControl if vendor == "poly" else HttpPhoneControl
        ctl, wrong = kind(url, "admin", "api-pw"), kind(url, "admin", "nope", settle_timeout=0.5)
        try:
            await _moves(ctl, ext, sip)
            # a wrong password: not registered (with the error), and no move
            reg = await wrong.registration()
            assert reg["registered"] is False and "error" in reg
            assert await wrong.set_server(HOST, B_SIP) is False
            assert await asyncio.to_thread(contacts, A_RPC, ext) == [f"sip:{ext}@{HOST}:{sip}"]
        finally:
            await ctl.close()
            await wrong.close()
            await runner.cleanup()
            await phone.unregister()
            phone.close()
            ep.close()

    asyncio.run(main())


def test_poly_control_reads_an_error_status_and_a_dead_phone_as_unregistered() -> None:
    """A Poly phone answering ``Status 4000`` (or nothing at all) is not registered for the agent client,
    and a config/set it refuses is no move."""

    async def line_info(_r: web.Request) -> web.Response:
        return web.json_response({"Status": "4000"})

    async def config_set(_r: web.Request) -> web.Response:
        return web.json_response({"Status": "4000"}, status=400)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/api/v1/mgmt/lineInfo", line_info)
        app.router.add_post("/api/v1/mgmt/config/set", config_set)
        runner = await _serve(app, 26976)
        ctl = PolyPhoneControl(f"http://{HOST}:26976", "u", "p", settle_timeout=0.5)
        dead = PolyPhoneControl(f"http://{HOST}:9", "u", "p", timeout=0.5, settle_timeout=0.5)
        try:
            reg = await ctl.registration()
            assert reg["registered"] is False and "4000" in reg["error"]
            assert await ctl.set_server(HOST, B_SIP) is False
            reg = await dead.registration()
            assert reg["registered"] is False and reg["error"]
            assert await dead.set_server(HOST, B_SIP) is False
        finally:
            await ctl.close()
            await dead.close()
            await runner.cleanup()

    asyncio.run(main())
