"""How an agent client drives its IP phone: one small protocol, an in-process and an HTTP implementation.

Why a protocol: the swarm runs 10,000 agent clients and their phones in one process (no HTTP per agent),
while a standalone agent client drives a standalone phone over the phone's Yealink-style management API,
exactly as it would drive a real Yealink. Both look the same to the client.

The registration dict (both implementations)::

    {"extension": "19001", "registered": True, "host": "198.18.1.10", "port": 5060,
     "call_state": "idle"}          # "idle" | "ringing" | "in_call"

``host``/``port`` are the SIP server the account is configured for (also while not registered).
Both methods are coroutines because the HTTP implementation does I/O; neither raises on a phone that is
unreachable or refuses: ``registration()`` then reports ``registered: False`` (with ``"error"``), and
``set_server()`` returns False.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import aiohttp

if TYPE_CHECKING:
    from stack.phone.ua import Phone


@runtime_checkable
class PhoneControl(Protocol):
    """What an agent client may do to its phone."""

    async def registration(self) -> dict[str, Any]:
        """Registration state of the phone's (first) account, shaped as in the module docstring."""
        ...

    async def set_server(self, host: str, port: int) -> bool:
        """Point the account at another SIP server and re-register; True once registered there."""
        ...


def unreachable(err: BaseException) -> dict[str, Any]:
    """The registration of a phone that could not be read: not registered, with the reason."""
    return {"extension": None, "registered": False, "host": None, "port": None, "call_state": "idle",
            "error": f"{type(err).__name__}: {err}"}  # fmt: skip


async def settle(phone: PhoneControl, host: str, port: int, within: float) -> bool:
    """Poll ``phone`` until it is registered at ``host:port`` (True) or ``within`` seconds pass (False): a
    real phone answers a change of server at once and registers in the background."""
    deadline = time.monotonic() + within
    while True:
        reg = await phone.registration()
        if reg["registered"] and reg["host"] == host and reg["port"] == int(port):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)


class BasicAuthHttp:
    """An HTTP client of a phone's management API with basic auth: one session, made on first use and
    closed by :meth:`close` if this object made it (the Yealink- and Poly-style controls share it)."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: float = 5.0,
        settle_timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.settle_timeout = settle_timeout
        cred = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {cred}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._own_session = session is None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        """Close the HTTP session if this object created it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None


class LocalPhoneControl:
    """In-process control of a :class:`stack.phone.ua.Phone` (the swarm: no HTTP, no copies)."""

    __slots__ = ("phone",)

    def __init__(self, phone: Phone) -> None:
        self.phone = phone

    async def registration(self) -> dict[str, Any]:
        p = self.phone
        return {
            "extension": p.extension,
            "registered": p.registered,
            "host": p.registrar[0],
            "port": p.registrar[1],
            "call_state": p.call_state,
        }

    async def set_server(self, host: str, port: int) -> bool:
        return await self.phone.move_to((host, int(port)))


class HttpPhoneControl(BasicAuthHttp):
    """Control of a phone through its Yealink-style Action URI API (see :mod:`stack.phone.api`).

    ``GET /servlet?phonecfg=get&accounts=1`` reads the account; ``GET /servlet?phonecfg=set&
    account.1.sip_server.1.address=H&account.1.sip_server.1.port=P`` changes the server. A real phone
    answers ``set`` at once and re-registers in the background, so :meth:`set_server` polls until the
    account is registered at the new server or ``settle_timeout`` passes.
    """

    def __init__(self, base_url: str, username: str, password: str, *, account: int = 1, **kw: Any) -> None:
        super().__init__(base_url, username, password, **kw)
        self.account = account

    async def _get(self, params: dict[str, str]) -> dict[str, Any]:
        async with self._http().get(
            f"{self.base_url}/servlet", params=params, headers=self._headers, timeout=self._timeout
        ) as resp:
            resp.raise_for_status()
            return await resp.json(content_type=None)

    async def registration(self) -> dict[str, Any]:
        try:
            body = await self._get({"phonecfg": "get", "accounts": "1"})
            acc = next(a for a in body["data"]["accounts"] if int(a["id"]) == self.account)
        except (TimeoutError, aiohttp.ClientError, KeyError, StopIteration, ValueError) as err:
            return unreachable(err)
        return {
            "extension": acc["user_name"],
            "registered": acc["status"] == "registered",
            "host": acc["sip_server"]["address"],
            "port": int(acc["sip_server"]["port"]),
            "call_state": body["data"].get("call_state", "idle"),
        }

    async def set_server(self, host: str, port: int) -> bool:
        n = self.account
        try:
            await self._get(
                {
                    "phonecfg": "set",
                    f"account.{n}.sip_server.1.address": host,
                    f"account.{n}.sip_server.1.port": str(int(port)),
                }
            )
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return False
        return await settle(self, host, port, self.settle_timeout)
