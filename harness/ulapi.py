"""The controller's client for the unified login's planned-switch API, from its wire protocol alone.

The harness never imports the stack (it must work against a contact center that is not ours): rules are
managed over HTTP as docs/cti-protocol.md ("Unified login HTTP API") specifies, with requests signed by the
lab's stack secret (X-Hil-Time, X-Hil-Sig = HMAC-SHA256(secret, METHOD\\nPATH\\nTIME\\nsha256(body)), the
time to the microsecond). The stack refuses a signature it has seen (a replay), so a request is signed
again for each try, never resent with the same headers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from typing import Any

import requests

from harness.credentials import STACK_SECRET_VAR
from harness.lab import Lab

SCOPES = ("system", "region", "skill_group", "agent")


class UlError(Exception):
    """The UL refused or could not be reached; the message says which and why."""


class UlNotFound(UlError):
    """The UL has no such rule (HTTP 404): already removed, or never there."""


def sign_request(secret: str, method: str, path: str, body: bytes = b"") -> dict[str, str]:
    """The headers that sign an admin request of the stack (the UL's rules, the swarm's agents): the one
    signer of the harness, as docs/cti-protocol.md specifies it. `path` without its query string."""
    ts = f"{time.time():.6f}"  # to the microsecond: the signature is unique to the request (its nonce)
    msg = f"{method.upper()}\n{path}\n{ts}\n{hashlib.sha256(body).hexdigest()}".encode()
    return {"X-Hil-Time": ts, "X-Hil-Sig": hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()}


def ul_urls(lab: Lab) -> dict[str, str]:
    """Each site's UL, at the address the controller reaches (management if it has one)."""
    out = {}
    for d in lab.topology.of_kind("ul"):
        out.setdefault(d.site, f"http://{d.control_address}:{d.spec.port}")
    return out


class UlClient:
    def __init__(self, base: str, secret: str | None = None, timeout: float = 5.0):
        self.base = base.rstrip("/")
        self.secret = secret if secret is not None else os.environ.get(STACK_SECRET_VAR, "")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, signed: bool = False) -> Any:
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if signed:
            if not self.secret:
                raise UlError(f"environment variable {STACK_SECRET_VAR} is not set (needed to change rules)")
            headers.update(sign_request(self.secret, method, path.split("?")[0], data))
        try:
            r = requests.request(
                method, self.base + path, data=data or None, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as e:
            raise UlError(f"{self.base}: unreachable: {e}") from None
        try:
            payload = r.json()
        except ValueError:
            payload = r.text
        if r.status_code >= 400:
            detail = payload.get("error", payload) if isinstance(payload, dict) else payload
            cls = UlNotFound if r.status_code == 404 else UlError
            raise cls(f"{self.base}{path}: HTTP {r.status_code}: {detail}")
        return payload

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/v1/health")

    def rules(self, include_removed: bool = False) -> list[dict[str, Any]]:
        res = self._call("GET", "/v1/rules" + ("?all=1" if include_removed else ""))
        return res.get("rules", res) if isinstance(res, dict) else res

    def add_rule(self, scope: str, value: str, target: str, enabled: bool = True) -> dict[str, Any]:
        if scope not in SCOPES:
            raise UlError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        body = {"scope": scope, "value": value, "target": target, "enabled": enabled}
        return self._call("POST", "/v1/rules", body, signed=True)

    def remove_rule(self, rule_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/rules/{rule_id}", signed=True)

    def sessions(self, include_all: bool = False) -> dict[str, Any]:
        return self._call("GET", "/v1/sessions" + ("?all=1" if include_all else ""))


def client_for(lab: Lab, prefer: str | None = None) -> UlClient:
    """A UL that answers, the preferred site's first: rules replicate between the sites' ULs."""
    urls = ul_urls(lab)
    order = sorted(urls, key=lambda s: s != prefer)
    errors = []
    for site in order:
        c = UlClient(urls[site])
        try:
            c.health()
            return c
        except UlError as e:
            errors.append(str(e))
    raise UlError("no unified login answers: " + "; ".join(errors))
