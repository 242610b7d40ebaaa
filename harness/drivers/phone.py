"""IP phone drivers over the phones' own HTTP management APIs: Yealink-style and Poly-style.

Why the vendor APIs: the harness must drive phones it did not build, so it uses only what a T54W or a
VVX 450 offers (Yealink Action URI ``/servlet?...``; Poly UC Software REST ``/api/v1/...``), with HTTP basic
auth. The virtual lab's phones emulate the same APIs (stack/phone/api.py), so this code runs in every test.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import requests

from harness.drivers.base import DeviceError, Driver, Steps

TRANSIENT = (requests.ConnectionError, requests.Timeout)


@dataclass
class PhoneAccess:
    host: str
    username: str
    password: str
    port: int = 80
    timeout: float = 3.0


@dataclass(frozen=True)
class Registration:
    """A line's registration as the phone reports it."""

    state: str  # registered | registering | failed | unregistered
    server: str
    port: int
    extension: str

    @property
    def registered(self) -> bool:
        return self.state == "registered"


class PhoneDriver(Driver, ABC):
    """Registration state, set the SIP server, reboot, firmware facts."""

    vendor = ""

    def __init__(self, name: str, access: PhoneAccess, steps: Steps | None = None):
        super().__init__(name, steps)
        self.access = access
        self.http = requests.Session()
        self.http.auth = (access.username, access.password)

    @property
    def base(self) -> str:
        a = self.access
        return f"http://{a.host}:{a.port}" if a.port != 80 else f"http://{a.host}"

    def _request(self, action: str, method: str, path: str, body: Any = None) -> Any:
        """One HTTP call as a logged step; connection failures retried, then DeviceUnreachable."""
        shown = f"{method} {path}" + (f" {json.dumps(body)}" if body is not None else "")
        with self.step(action, [shown]):
            if self.dry_run:
                return {}

            def call() -> requests.Response:
                return self.http.request(method, self.base + path, json=body, timeout=self.access.timeout)

            r = self.retrying(action, call, TRANSIENT)
            if r.status_code == 401:
                raise DeviceError(f"{self.name}: the phone refused the credentials of {self.access.username}")
            try:
                data = r.json()
            except ValueError:
                raise DeviceError(f"{self.name}: {shown}: HTTP {r.status_code}, not JSON") from None
            self.check(shown, r.status_code, data)
            return data

    @abstractmethod
    def check(self, what: str, status: int, data: Any) -> None: ...

    @abstractmethod
    def registration(self) -> Registration: ...

    @abstractmethod
    def set_sip_server(self, host: str, port: int = 5060) -> None: ...

    @abstractmethod
    def reboot(self) -> None: ...

    @abstractmethod
    def facts(self) -> dict[str, str]: ...

    def close(self) -> None:
        self.http.close()


class YealinkPhone(PhoneDriver):
    """Yealink Action URI (``/servlet?phonecfg=...``, ``key=...``)."""

    vendor = "yealink"

    def check(self, what: str, status: int, data: Any) -> None:
        if status != 200 or not isinstance(data, dict) or data.get("ret") != "ok":
            raise DeviceError(f"{self.name}: {what}: HTTP {status}: {data}")

    def _get(self, action: str, data: dict[str, Any]) -> dict[str, Any]:
        out = self._request(action, "GET", "/servlet?phonecfg=get&accounts=1&fw=1")
        return out.get("data", {}) if out else data

    def registration(self) -> Registration:
        data = self._get("registration", {"accounts": [{}]})
        acct = (data.get("accounts") or [{}])[0]
        srv = acct.get("sip_server", {}) or {}
        return Registration(
            str(acct.get("status", "unknown")),
            str(srv.get("address", "")),
            int(srv.get("port", 0) or 0),
            str(acct.get("user_name", "")),
        )

    def set_sip_server(self, host: str, port: int = 5060) -> None:
        q = f"/servlet?phonecfg=set&account.1.sip_server.1.address={host}&account.1.sip_server.1.port={port}"
        self._request("set_sip_server", "GET", q)

    def reboot(self) -> None:
        self._request("reboot", "GET", "/servlet?key=Reboot")

    def facts(self) -> dict[str, str]:
        fw = self._get("facts", {}).get("fw", {})
        return {
            "vendor": self.vendor,
            "model": str(fw.get("model", "")),
            "firmware": str(fw.get("firmware", "")),
            "hardware": str(fw.get("hardware", "")),
            "mac": str(fw.get("mac", "")),
        }


class PolyPhone(PhoneDriver):
    """Poly UC Software REST API (``/api/v1/mgmt/...``, ``"Status": "2000"`` on success)."""

    vendor = "poly"

    def check(self, what: str, status: int, data: Any) -> None:
        if status != 200 or not isinstance(data, dict) or data.get("Status") != "2000":
            raise DeviceError(f"{self.name}: {what}: HTTP {status}: {data}")

    def registration(self) -> Registration:
        data = self._request("registration", "GET", "/api/v1/mgmt/lineInfo")
        line = (data.get("data") or [{}])[0] if data else {}
        return Registration(
            str(line.get("RegistrationStatus", "unknown")).lower(),
            str(line.get("ProxyAddress", "")),
            int(line.get("Port", 0) or 0),
            str(line.get("UserID", "")),
        )

    def set_sip_server(self, host: str, port: int = 5060) -> None:
        body = {"data": {"reg.1.server.1.address": host, "reg.1.server.1.port": str(port)}}
        self._request("set_sip_server", "POST", "/api/v1/mgmt/config/set", body)

    def reboot(self) -> None:
        self._request("reboot", "POST", "/api/v1/mgmt/safeRestart")

    def facts(self) -> dict[str, str]:
        d = (self._request("facts", "GET", "/api/v1/mgmt/device/info") or {}).get("data", {})
        return {
            "vendor": self.vendor,
            "model": str(d.get("ModelNumber", "")),
            "firmware": str(d.get("FirmwareRelease", "")),
            "hardware": str(d.get("HardwareRevision", "")),
            "mac": str(d.get("MACAddress", "")),
            "uptime": str(d.get("UpTimeSinceLastReboot", "")),
        }


VENDORS: dict[str, type[PhoneDriver]] = {"yealink": YealinkPhone, "poly": PolyPhone}


def phone_driver(vendor: str, name: str, access: PhoneAccess, steps: Steps | None = None) -> PhoneDriver:
    try:
        cls = VENDORS[vendor]
    except KeyError:
        raise DeviceError(f"{name}: no phone driver for vendor {vendor!r}") from None
    return cls(name, access, steps)
