"""Management HTTP APIs of the emulated phone: a Yealink-style Action URI API and a Poly-style REST API.

Why emulate vendor APIs: the harness drives phones only through the interfaces real phones have, so the
same phone drivers run against a physical T54W / VVX 450 and against this emulation. Both APIs use HTTP
basic auth (user and password given at start); a wrong or missing credential gets 401.

Yealink-style (Action URI, as in Yealink's admin guides: ``/servlet?...``; the older
``/cgi-bin/ConfigManApp.com?...`` path is accepted too). Parameters may be written plainly
(``?phonecfg=get&accounts=1``) or in the guides' bracketed form (``?phonecfg=get[&accounts=1]``):

- ``GET /servlet?phonecfg=get&accounts=1&fw=1`` -> account registration and firmware facts. The real
  phone's reply body is firmware-specific; ours is JSON::

      {"ret": "ok", "data": {"accounts": [{"id": 1, "enable": 1, "label": "19001", "user_name": "19001",
        "auth_name": "19001", "sip_server": {"address": "198.18.1.10", "port": 5060},
        "status": "registered", "expires": 300}],
        "call_state": "idle", "fw": {"model": "SIP-T54W", "firmware": "96.86.0.100", ...}}}

  ``status`` is registered | registering | failed | unregistered.
- ``GET /servlet?phonecfg=set&account.1.sip_server.1.address=H&account.1.sip_server.1.port=P``
  (auto-provisioning parameter names; the legacy ``account.1.sip_server_host``/``_port`` too, and
  ``account.1.enable=0|1``) -> ``{"ret": "ok"}`` at once; the phone then re-registers at the new server
  (old binding removed best effort), as a real phone does after a config change.
- ``GET /servlet?key=Reboot`` -> ``{"ret": "ok"}``; the phone unregisters, pauses ~1 s, registers again.
- ``GET /servlet?key=ASW`` answers the ringing call, ``key=CANCEL`` rejects or ends the call.

Poly-style (Poly UC Software REST API, ``/api/v1/...``, JSON with ``"Status": "2000"`` on success,
``"4000"`` invalid input, ``"4007"`` no call):

- ``GET /api/v1/mgmt/lineInfo`` -> ``{"Status": "2000", "data": [{"LineNumber": "1",
  "RegistrationStatus": "registered"|"unregistered", "SIPAddress": "19001@198.18.2.10", "UserID": "19001",
  "Label": "19001", "LineType": "private", "Protocol": "SIP", "ProxyAddress": "198.18.2.10",
  "Port": "5060"}]}``
- ``GET /api/v1/mgmt/device/info`` -> model, firmware, MAC, IP, uptime.
- ``POST /api/v1/mgmt/config/set`` ``{"data": {"reg.1.server.1.address": H, "reg.1.server.1.port": P}}``
  -> re-registers there; ``POST /api/v1/mgmt/config/get`` ``{"data": [names]}`` reads them back.
- ``POST /api/v1/mgmt/safeRestart`` (and ``safeReboot``) -> unregister, pause ~1 s, register (after the
  current call, as "safe" means on the real phone).
- ``GET /api/v1/webCallControl/callStatus`` -> the call, or Status 4007 when idle.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from stack.phone.ua import Phone

RESTART_PAUSE = 1.0


@dataclass(frozen=True)
class DeviceFacts:
    """What the management API says the device is (model and firmware as real units report them)."""

    vendor: str
    model: str
    firmware: str
    mac: str
    hardware: str = ""


def default_facts(vendor: str, extension: str) -> DeviceFacts:
    """Plausible facts for ``vendor``; the MAC is derived from the extension so it is stable per phone."""
    n = zlib.crc32(extension.encode()) & 0xFFFFFF
    if vendor == "yealink":
        mac = f"805ec0{n:06x}"  # a Yealink OUI
        return DeviceFacts("yealink", "SIP-T54W", "96.86.0.100", mac, "96.0.1.0.0.0.0")
    if vendor == "poly":
        mac = f"0004f2{n:06x}"  # a Polycom OUI
        return DeviceFacts("poly", "VVX 450", "6.4.3.5145", mac, "3111-48450-001 Rev:A")
    raise ValueError(f"unknown vendor {vendor!r}")


class _PhoneHost:
    """The phone behind one API server, plus the background jobs the API started on it."""

    def __init__(self, phone: Phone, facts: DeviceFacts) -> None:
        self.phone = phone
        self.facts = facts
        self.booted = time.monotonic()
        self.jobs: set[asyncio.Task[Any]] = set()

    def run(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)

    async def restart(self, wait_idle: bool) -> None:
        if wait_idle:
            while self.phone.call_state != "idle":
                await asyncio.sleep(0.2)
        self.booted = time.monotonic()
        await self.phone.restart(RESTART_PAUSE)

    async def set_server(self, host: str, port: int) -> None:
        await self.phone.move_to((host, port))

    def uptime(self) -> str:
        s = int(time.monotonic() - self.booted)
        return f"{s // 86400} day {s % 86400 // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"

    async def close(self) -> None:
        for task in list(self.jobs):
            task.cancel()
        if self.jobs:
            await asyncio.gather(*self.jobs, return_exceptions=True)


PHONE_HOST = web.AppKey("phone_host", _PhoneHost)


def _basic_auth(username: str, password: str, realm: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    want_user, want_pw = username.encode(), password.encode()

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        hdr = request.headers.get("Authorization", "")
        if hdr[:6].lower() == "basic ":
            try:
                user, _, pw = base64.b64decode(hdr[6:].strip(), validate=True).partition(b":")
            except ValueError:
                user, pw = b"", b""
            # Both compared, always, so timing does not tell which one was wrong.
            ok_user = hmac.compare_digest(user, want_user)
            ok_pw = hmac.compare_digest(pw, want_pw)
            if ok_user and ok_pw:
                return await handler(request)
        return web.json_response(
            {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": f'Basic realm="{realm}"'}
        )

    return middleware


def _port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise ValueError(f"bad port {value!r}")
    return port


# ------------------------------------------------------------------------------------------ Yealink

_ACCOUNT_KEY = re.compile(r"^account\.(\d+)\.(.+)$")


def _yealink_params(request: web.Request) -> dict[str, str]:
    """Query parameters, accepting the admin guides' ``phonecfg=get[&accounts=1]`` bracket form."""
    raw = request.rel_url.raw_query_string
    raw = raw.replace("%5B", "[").replace("%5b", "[").replace("%5D", "]").replace("%5d", "]")
    raw = re.sub(r"\[&", "&", raw)
    raw = re.sub(r"\](?=&|$)", "", raw)
    return dict(parse_qsl(raw, keep_blank_values=True))


def _yealink_account(host: _PhoneHost) -> dict[str, Any]:
    st = host.phone.status()
    return {
        "id": 1,
        "enable": 1 if host.phone.active or st["registered"] else 0,
        "label": host.phone.extension,
        "user_name": host.phone.extension,
        "auth_name": host.phone.extension,
        "sip_server": {"address": st["registrar"]["host"], "port": st["registrar"]["port"]},
        "status": st["state"],
        "expires": st["expires"],
    }


def yealink_app(
    phone: Phone, username: str, password: str, facts: DeviceFacts | None = None
) -> web.Application:
    """The Yealink-style Action URI API for ``phone``."""
    host = _PhoneHost(phone, facts or default_facts("yealink", phone.extension))
    app = web.Application(middlewares=[_basic_auth(username, password, "Yealink")])

    def ok(**extra: Any) -> web.Response:
        return web.json_response({"ret": "ok", **extra})

    def failed(msg: str, status: int = 400) -> web.Response:
        return web.json_response({"ret": "failed", "msg": msg}, status=status)

    async def servlet(request: web.Request) -> web.Response:
        q = _yealink_params(request)
        cfg = q.get("phonecfg")
        if cfg == "get":
            data: dict[str, Any] = {"call_state": phone.call_state}
            if q.get("accounts", "1") == "1":
                data["accounts"] = [_yealink_account(host)]
            if q.get("fw") == "1":
                f = host.facts
                data["fw"] = {"model": f.model, "firmware": f.firmware, "hardware": f.hardware, "mac": f.mac}
            return ok(data=data)
        if cfg == "set":
            return _yealink_set(q)
        key = q.get("key")
        if key is not None:
            k = key.upper()
            if k == "REBOOT":
                host.run(host.restart(wait_idle=False))
                return ok()
            if k.startswith("ASW"):
                return ok() if phone.answer() else failed("no ringing call", 409)
            if k.startswith("CANCEL") or k == "CALLEND":
                if phone.call_state == "idle":
                    return failed("no call", 409)
                host.run(phone.hangup())
                return ok()
            return failed(f"unsupported key {key!r}")
        return failed("unsupported request")

    def _yealink_set(q: dict[str, str]) -> web.Response:
        new_host, new_port, enable = None, None, None
        ignored = []
        for name, value in q.items():
            if name == "phonecfg":
                continue
            m = _ACCOUNT_KEY.match(name)
            if not m or m.group(1) != "1":
                ignored.append(name)
                continue
            field = m.group(2)
            if field in ("sip_server.1.address", "sip_server_host"):
                new_host = value.strip()
            elif field in ("sip_server.1.port", "sip_server_port"):
                try:
                    new_port = _port(value)
                except ValueError:
                    return failed(f"bad port {value!r}")
            elif field == "enable":
                enable = value.strip() == "1"
            else:
                ignored.append(name)
        if new_host == "":
            return failed("empty sip server address")
        cur_host, cur_port = phone.registrar
        target = (new_host or cur_host, new_port or cur_port)
        if enable is False:
            host.run(phone.unregister())
        elif target != (cur_host, cur_port):
            if enable is None and not phone.active and not phone.registered:
                phone.registrar = target  # account disabled: remember the server, do not register
            else:
                host.run(host.set_server(*target))
        elif enable is True and not phone.registered:
            host.run(phone.register())
        return ok(ignored=ignored) if ignored else ok()

    app.router.add_get("/servlet", servlet)
    app.router.add_get("/cgi-bin/ConfigManApp.com", servlet)
    app[PHONE_HOST] = host
    app.on_cleanup.append(lambda _app: host.close())
    return app


# ------------------------------------------------------------------------------------------ Poly


def poly_app(phone: Phone, username: str, password: str, facts: DeviceFacts | None = None) -> web.Application:
    """The Poly-style REST API for ``phone``."""
    host = _PhoneHost(phone, facts or default_facts("poly", phone.extension))
    app = web.Application(middlewares=[_basic_auth(username, password, "Poly")])

    def status(code: str, http: int = 200, **extra: Any) -> web.Response:
        return web.json_response({"Status": code, **extra}, status=http)

    def config_values() -> dict[str, str]:
        h, p = phone.registrar
        return {
            "reg.1.address": phone.extension,
            "reg.1.auth.userId": phone.extension,
            "reg.1.label": phone.extension,
            "reg.1.server.1.address": h,
            "reg.1.server.1.port": str(p),
            "reg.1.server.1.expires": str(phone.expires),
            "reg.1.server.1.transport": "UDPOnly",
        }

    async def line_info(_request: web.Request) -> web.Response:
        h, p = phone.registrar
        line = {
            "LineNumber": "1",
            "RegistrationStatus": "registered" if phone.registered else "unregistered",
            "SIPAddress": f"{phone.extension}@{h}",
            "UserID": phone.extension,
            "Label": phone.extension,
            "LineType": "private",
            "Protocol": "SIP",
            "ProxyAddress": h,
            "Port": str(p),
        }
        return status("2000", data=[line])

    async def device_info(_request: web.Request) -> web.Response:
        f = host.facts
        ip = phone.endpoint.contact_host(phone.registrar[0])
        return status(
            "2000",
            data={
                "ModelNumber": f.model,
                "FirmwareRelease": f.firmware,
                "DeviceType": "hardwareEndpoint",
                "DeviceVendor": "Polycom",
                "MACAddress": f.mac,
                "IPV4Address": ip,
                "IPV6Address": "::",
                "UpTimeSinceLastReboot": host.uptime(),
                "AttachedHardware": {},
                "CanApplyShutdownRequest": "true",
                "PreferredLineNumber": "1",
                "HardwareRevision": f.hardware,
            },
        )

    async def read_json(request: web.Request) -> Any:
        try:
            body = await request.json(loads=json.loads)
        except (ValueError, UnicodeDecodeError):
            return None
        return body.get("data") if isinstance(body, dict) else None

    async def config_set(request: web.Request) -> web.Response:
        data = await read_json(request)
        if not isinstance(data, dict) or not data:
            return status("4000", 400)
        h, p = phone.registrar
        for name, value in data.items():
            if name == "reg.1.server.1.address":
                h = str(value).strip()
                if not h:
                    return status("4000", 400)
            elif name == "reg.1.server.1.port":
                try:
                    p = _port(str(value))
                except ValueError:
                    return status("4000", 400)
            else:
                return status("4000", 400, msg=f"unsupported parameter {name}")
        if (h, p) != phone.registrar or not phone.registered:
            host.run(host.set_server(h, p))
        return status("2000")

    async def config_get(request: web.Request) -> web.Response:
        names = await read_json(request)
        if not isinstance(names, list) or not names:
            return status("4000", 400)
        values = config_values()
        missing = [n for n in names if n not in values]
        if missing:
            return status("4000", 400, msg=f"unknown parameters {missing}")
        return status("2000", data={n: values[n] for n in names})

    async def safe_restart(_request: web.Request) -> web.Response:
        host.run(host.restart(wait_idle=True))
        return status("2000")

    async def call_status(_request: web.Request) -> web.Response:
        st = phone.status()
        call = st["call"]
        if call is None:
            return status("4007")
        return status(
            "2000",
            data={
                "CallHandle": call["call_id"],
                "CallState": "Connected" if st["call_state"] == "in_call" else "Ringing",
                "Type": "Incoming" if call["direction"] == "incoming" else "Outgoing",
                "RemotePartyNumber": call["peer"],
                "LineID": "1",
                "Protocol": "Sip",
            },
        )

    app.router.add_get("/api/v1/mgmt/lineInfo", line_info)
    app.router.add_get("/api/v1/mgmt/device/info", device_info)
    app.router.add_post("/api/v1/mgmt/config/set", config_set)
    app.router.add_post("/api/v1/mgmt/config/get", config_get)
    app.router.add_post("/api/v1/mgmt/safeRestart", safe_restart)
    app.router.add_post("/api/v1/mgmt/safeReboot", safe_restart)
    app.router.add_get("/api/v1/webCallControl/callStatus", call_status)
    app[PHONE_HOST] = host
    app.on_cleanup.append(lambda _app: host.close())
    return app


def make_app(
    vendor: str, phone: Phone, username: str, password: str, facts: DeviceFacts | None = None
) -> web.Application:
    """The management API of ``vendor`` ("yealink" or "poly") for ``phone``."""
    if vendor == "yealink":
        return yealink_app(phone, username, password, facts)
    if vendor == "poly":
        return poly_app(phone, username, password, facts)
    raise ValueError(f"unknown vendor {vendor!r}")
