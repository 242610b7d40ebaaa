"""An agent client's control of baresip, a third-party SIP softphone, through baresip's ctrl_tcp module.

Why: the stack must work with phones it did not write. baresip (Debian package ``baresip-core``) is run by
the lab as a service of the agents host, with no account configured; this control gives it the agent's
account and moves it between the sites' PBXs with baresip's own commands, as a softphone's integration
would. ctrl_tcp speaks netstrings (``LEN:JSON,``): a request ``{"command", "params", "token"}`` gets a
response ``{"response": true, "ok", "data", "token"}``; events (``{"event": true, "type", ...}``) come
on the same connection unasked.

- ``uanew <sip:EXT@HOST:PORT>;auth_pass=...;regint=N;answermode=auto`` creates the UA, which registers at
  ``HOST:PORT`` (in baresip the AoR's domain is the registrar);
- ``uadel sip:EXT@HOST:PORT`` removes a UA (it unregisters, best effort: a dead PBX is not waited for);
- ``reginfo`` lists every UA with its registration status (``OK`` once registered, ``zzz`` not yet,
  ``ERR`` refused); :meth:`registration` reads it on every call, so a restarted agent client finds the UA
  its predecessor left;
- call events (``CALL_INCOMING``, ``CALL_ESTABLISHED``, ``CALL_CLOSED``) give the call state.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from typing import Any

from stack.phone.control import settle, unreachable

__all__ = ["BaresipError", "BaresipPhoneControl", "netstring", "parse_reginfo"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UA_LINE = re.compile(r"sip:(?P<user>[^@\s]+)@(?P<host>[^:;>\s]+)(?::(?P<port>\d+))?")
_CALL_STATES = {"CALL_INCOMING": "ringing", "CALL_RINGING": "ringing", "CALL_ESTABLISHED": "in_call",
                "CALL_CLOSED": "idle"}  # fmt: skip


class BaresipError(Exception):
    """baresip did not answer, or refused a command."""


def netstring(msg: dict[str, Any]) -> bytes:
    """One ctrl_tcp frame."""
    body = json.dumps(msg).encode()
    return str(len(body)).encode() + b":" + body + b","


def parse_reginfo(text: str) -> list[dict[str, Any]]:
    """``reginfo`` output -> ``[{"user", "host", "port", "status"}]`` (status ``OK``, ``zzz``, ``ERR``...)."""
    out = []
    for raw in _ANSI.sub("", text).splitlines():
        line = raw.lstrip("> ").strip()
        m = _UA_LINE.match(line)
        if not m:
            continue
        rest = line[m.end() :].split()
        out.append(
            {
                "user": m.group("user"),
                "host": m.group("host"),
                "port": int(m.group("port") or 5060),
                "status": rest[0] if rest else "",
            }
        )
    return out


class BaresipPhoneControl:
    """The account ``extension`` in the baresip whose ctrl_tcp listens at ``host:port``."""

    def __init__(
        self,
        host: str,
        port: int,
        extension: str,
        password: str,
        *,
        regint: int = 60,
        timeout: float = 3.0,
        settle_timeout: float = 10.0,
    ) -> None:
        self.ctrl = (host, int(port))
        self.extension, self.password = extension, password
        self.regint = regint
        self.timeout = timeout
        self.settle_timeout = settle_timeout
        self.call_state = "idle"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._rx: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tokens = itertools.count(1)
        self._lock = asyncio.Lock()  # one connection attempt at a time

    # ---- ctrl_tcp ---------------------------------------------------------------------------------

    async def _connect(self) -> None:
        async with self._lock:
            if self._writer is not None and not self._writer.is_closing():
                return
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(*self.ctrl), self.timeout
            )
            self._rx = asyncio.create_task(self._receive(self._reader), name="baresip-ctrl")

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                head = await reader.readuntil(b":")
                body = await reader.readexactly(int(head[:-1]) + 1)  # the JSON and its ","
                self._dispatch(json.loads(body[:-1]))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(BaresipError("ctrl_tcp connection closed"))
            self._pending.clear()
            if self._writer is not None:
                self._writer.close()
            self._writer = None

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("response"):
            fut = self._pending.pop(str(msg.get("token")), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif msg.get("event") and self.extension in str(msg.get("accountaor", "")):
            self.call_state = _CALL_STATES.get(str(msg.get("type")), self.call_state)

    async def command(self, command: str, params: str = "") -> str:
        """Run one baresip command; its text output, or BaresipError."""
        try:
            await self._connect()
        except (OSError, TimeoutError) as err:
            raise BaresipError(f"baresip ctrl_tcp {self.ctrl[0]}:{self.ctrl[1]}: {err}") from None
        token = str(next(self._tokens))
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[token] = fut
        assert self._writer is not None
        self._writer.write(netstring({"command": command, "params": params, "token": token}))
        try:
            await self._writer.drain()
            reply = await asyncio.wait_for(fut, self.timeout)
        except (OSError, TimeoutError) as err:
            self._pending.pop(token, None)
            raise BaresipError(f"baresip {command}: {type(err).__name__}: {err}") from None
        if not reply.get("ok"):
            raise BaresipError(f"baresip {command}: {reply.get('data')}")
        return str(reply.get("data") or "")

    async def _mine(self) -> list[dict[str, Any]]:
        return [ua for ua in parse_reginfo(await self.command("reginfo")) if ua["user"] == self.extension]

    # ---- PhoneControl -----------------------------------------------------------------------------

    async def registration(self) -> dict[str, Any]:
        try:
            uas = await self._mine()
        except BaresipError as err:
            return unreachable(err)
        if not uas:
            return {"extension": self.extension, "registered": False, "host": None, "port": None,
                    "call_state": self.call_state}  # fmt: skip
        ua = next((u for u in uas if u["status"] == "OK"), uas[-1])
        return {
            "extension": self.extension,
            "registered": ua["status"] == "OK",
            "host": ua["host"],
            "port": ua["port"],
            "call_state": self.call_state,
        }

    async def set_server(self, host: str, port: int) -> bool:
        """A new UA at ``host:port``, then the old ones removed: baresip's AoR names its registrar, so a
        move is a new account (a desk phone instead edits its server field)."""
        port = int(port)
        aor = f"sip:{self.extension}@{host}:{port}"
        try:
            uas = await self._mine()
            here = [u for u in uas if (u["host"], u["port"]) == (host, port)]
            if here:  # asked to register where it is: a fresh UA (the PBX may have lost it)
                await self.command("uadel", aor)
            await self.command(
                "uanew", f"<{aor}>;auth_pass={self.password};regint={self.regint};answermode=auto"
            )
            for u in uas:
                if u not in here:
                    with contextlib.suppress(BaresipError):
                        await self.command("uadel", f"sip:{u['user']}@{u['host']}:{u['port']}")
        except BaresipError:
            return False
        return await settle(self, host, port, self.settle_timeout)

    async def close(self) -> None:
        """Close the control connection (baresip and its UA stay, as a softphone does)."""
        if self._writer is not None:
            self._writer.close()
        if self._rx is not None:
            self._rx.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rx
        self._writer = self._rx = None
