"""The unified login's admin connection to its site's CTI (switch orders, fences).

Why persistent and signed: a storm of logins fences thousands of old sessions through one connection, not
thousands; admin messages are HMAC-signed with the lab secret, so nobody else can fence or move agents. A
dead CTI must not stall logins: after a failed connect the CTI is skipped for a while.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from stack.common import auth
from stack.cti.client import CtiConnection, CtiError


class CtiAdmin:
    """A persistent, signed admin connection from the UL to its site's CTI (reconnects on demand)."""

    def __init__(self, host: str, port: int, secret: str) -> None:
        self.host, self.port, self.secret = host, port, secret
        self._conn: CtiConnection | None = None
        self._lock = asyncio.Lock()
        self._down_until = 0.0  # after a failed connect, skip for a while: a dead CTI must not stall logins
        self._refused = False  # the last connect was refused: no CTI process, so no sessions either

    async def send(self, op: str, **fields: Any) -> dict[str, Any] | None:
        for _ in range(2):
            # Signed again for each try: the CTI remembers a nonce, so a resent message would be a replay.
            msg = auth.sign_message(self.secret, {"type": "admin", "op": op, **fields})
            async with self._lock:
                if self._conn is None or self._conn.closed:
                    if time.monotonic() < self._down_until:
                        return None
                    try:
                        self._conn = await CtiConnection.open(self.host, self.port, timeout=1.0)
                        self._refused = False
                    except CtiError as err:
                        self._refused = err.refused
                        self._down_until = time.monotonic() + 2.0
                        return None
                conn = self._conn
            try:
                return await conn.request(msg, timeout=2.0)
            except CtiError as err:
                if err.code not in ("disconnected", "timeout"):
                    return err.reply
                await conn.close()
        return None

    async def fence(self, agent: str, epoch: int, site: str, extension: str) -> bool:
        """Have the CTI drop the agent's session; True once it surely holds none (it said so, or no CTI
        process listens: a refused connection)."""
        reply = await self.send("fence", agent=agent, epoch=epoch, site=site, extension=extension)
        if reply is None:
            return self._refused
        return reply.get("type") == "admin_ok"

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
