"""The CTI's view of its site PBX: link up or down, and which extensions are registered.

Why it is built this way:
- Liveness and registrations are read apart. Liveness: one ``ul.lookup`` of a probe AOR over JSON-RPC
  (a hash lookup, 0.3 ms whatever the table size; any JSON-RPC answer, even "not found", means the PBX is
  alive), with a SIP OPTIONS beside it; two failures in a row mark the link down. Registrations: a bulk
  ``ul.dump brief`` (one HTTP call for 5,000 agents instead of 5,000 lookups). The two are apart because a
  dump grows quadratically with the table in Kamailio 5.6 (260 ms at 10,000 contacts, seconds on a loaded
  machine): with one loop, a slow dump timed out, was taken for a dead PBX, and pushed ``pbx_link_down``
  to thousands of agents that then failed over from a healthy site (measured: 613 of 5,000 at the
  10,000-agent lab, bench/bench_failover.py).
- Registrations pushed, the dump kept to reconcile (``events``): an event newer by (boot, seq) than the
  last one applied for its extension changes the view at once, and ``link_phone`` on a phone an event says
  is registered costs the PBX nothing. Events are hints (one may be lost): "not registered" or silence
  still asks the PBX, and a dump repairs what was missed without undoing an event newer than its start.
- The loops that drive this object and tell the agents live in stack/cti/pbxwatch.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from sipcore.probe import options_async


class RpcError(Exception):
    """A JSON-RPC error answer: the PBX answered, so it is alive."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code


class PbxUnreachable(Exception):
    """No answer from the PBX (a timeout, a refused connection, a reply that is not JSON-RPC)."""


class PbxLink:
    """Live view of the site PBX: link up/down (a cheap probe) and the registered extensions (bulk dump,
    and with ``events`` the registration events the PBX pushes)."""

    PROBE_AOR = "cti-liveness-probe"  # never registered: Kamailio answers "not found", which is an answer
    OLD_BOOTS = 8  # boots of earlier PBX runs remembered, so their late events are not taken for new ones

    def __init__(
        self,
        rpc_url: str | None,
        *,
        interval: float = 0.5,
        timeout: float = 0.4,
        fail_after: int = 2,
        dump_timeout: float = 5.0,
        dump_factor: float = 4.0,
        sip: tuple[str, int] | None = None,
        events: bool = False,
        reconcile: float = 30.0,
    ) -> None:
        self.rpc_url = rpc_url
        self.interval = interval
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.fail_after = fail_after
        self.dump_timeout = aiohttp.ClientTimeout(total=dump_timeout)
        self.dump_factor = dump_factor
        self.up: bool | None = None
        self.registered: set[str] = set()
        self.fails = 0
        self.last_ok = 0.0
        self.polls = 0
        self.dumps = 0
        self.dump_seconds = 0.0  # how long the last bulk dump took
        self.dumped = False  # a dump has succeeded: ``registered`` means something
        self.sip = sip  # (host, port) for the SIP OPTIONS half of the liveness probe, or None
        # An RPC on another address (the PBX's management plane) cannot vouch for the data path the phones
        # use: then only the SIP half says the link is up (a cut of the PBX's data port is a link down).
        self.rpc_vouches = sip is None or urlsplit(rpc_url or "").hostname == sip[0]
        # Extensions a direct lookup found registered, and when: a dump that began before that moment
        # cannot know of them and must not take them away (it would tell a freshly linked agent its phone
        # is unregistered, and send it back to where it came from: seen at 10,000 agents).
        # With events, the same holds for an event: a dump that began before it must not undo it. So both
        # record here when they last changed an extension, and a dump keeps those extensions as they are.
        self.confirmed: dict[str, float] = {}
        # Pushed registration events (``events``): the PBX run they describe, and per extension the seq
        # and the state of the last one applied. ``pushed`` is what events (or a newer dump) say now.
        self.events = events
        self.reconcile = reconcile  # seconds between reconciling dumps when events are on
        self.boot: str | None = None
        self.old_boots: list[str] = []
        self.sip_boot: str | None = None  # the run the PBX's OPTIONS answer names (X-Pbx-Boot)
        self.restarted = False
        self.seqs: dict[str, int] = {}
        self.pushed: dict[str, bool] = {}
        self.applied = 0  # events applied (newer than the last for their extension)
        self.stale = 0  # events dropped as older, repeated or from an earlier PBX run
        self.lookups = 0  # direct per-extension ``ul.lookup``s (link_phone), the probe not counted
        self._http: aiohttp.ClientSession | None = None

    async def _rpc(self, method: str, *params: Any, timeout: aiohttp.ClientTimeout | None = None) -> Any:
        assert self.rpc_url and self._http
        payload = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}
        async with self._http.post(self.rpc_url, json=payload, timeout=timeout or self.timeout) as resp:
            reply = await resp.json(content_type=None)
        if not isinstance(reply, dict):
            raise ValueError("JSON-RPC reply is not an object")
        if "error" in reply:
            raise RpcError(int(reply["error"].get("code", 0)), str(reply["error"].get("message", "")))
        return reply.get("result")

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def _rpc_alive(self) -> bool:
        try:
            await self._rpc("ul.lookup", "location", self.PROBE_AOR)
        except RpcError:
            return True  # "AOR not found" (or any JSON-RPC error): the PBX answered
        except (TimeoutError, aiohttp.ClientError, ValueError, AttributeError, OSError):
            return False
        return True

    async def _sip_alive(self) -> bool:
        assert self.sip is not None
        resp = await options_async(self.sip[0], self.sip[1], self.timeout.total or 0.4)
        if resp is None:
            return False
        self._saw_boot(resp.header("X-Pbx-Boot"))
        return True

    def _saw_boot(self, boot: str | None) -> None:
        """The PBX's run as its OPTIONS answer names it (a PBX that does not say: nothing to learn). A new
        run means its location table started empty: a restart shorter than two probes never takes the
        link down, and the phones' keep-alives may miss it too (scenarios/schedules/
        pbx-restart-unregistered.json: 80 agents online with no registration anywhere), so the view of
        registrations must be read again at once (``restarted``), not at the next reconciliation."""
        if not boot:
            return
        if self.sip_boot is not None and boot != self.sip_boot:
            self.restarted = True
            self.link_restored()  # what events said was about the old run
        self.sip_boot = boot

    def take_restart(self) -> bool:
        """Whether a restart was seen since the last call (the watch then reconciles)."""
        was, self.restarted = self.restarted, False
        return was

    async def probe(self) -> bool:
        """One liveness probe; True when the PBX answered. ``up`` turns False after ``fail_after`` misses.

        With ``sip`` set, a SIP OPTIONS goes out beside the JSON-RPC lookup and either answer will do: the
        RPC is served by Kamailio's HTTP worker, which queues behind a slow bulk dump, so under load an
        RPC probe alone timed out and a healthy PBX was reported down (10,000 agents, ntg's CTI). When the
        RPC is on the PBX's management address, only the SIP answer counts: it is the phones' path."""
        self.polls += 1
        if self.rpc_vouches:
            checks = [self._rpc_alive()] + ([self._sip_alive()] if self.sip else [])
        else:
            checks = [self._sip_alive()]
        if not any(await asyncio.gather(*checks)):
            self.fails += 1
            if self.fails >= self.fail_after:
                self.up = False
            return False
        self.fails = 0
        self.up = True
        self.last_ok = time.monotonic()
        return True

    async def dump(self) -> bool:
        """One bulk read of the registered extensions (``registered``); True when it worked."""
        self.dumps += 1
        t0 = time.monotonic()
        try:
            res = await self._rpc("ul.dump", "brief", timeout=self.dump_timeout)
            regs = set()
            for dom in (res or {}).get("Domains", []):
                for aor in dom.get("Domain", {}).get("AoRs", []) or []:
                    if "Info" not in aor:  # Kamailio 5.6 "brief": {"AoR": ext}, a record with a contact
                        regs.add(str(aor.get("AoR")))
                        continue
                    info = aor["Info"]
                    if any(_live(c.get("Contact", {})) for c in info.get("Contacts", []) or []):
                        regs.add(str(info.get("AoR")))
        except (TimeoutError, aiohttp.ClientError, ValueError, RpcError, AttributeError, OSError):
            return False
        finally:
            self.dump_seconds = time.monotonic() - t0
        # What a lookup or an event told us since the dump began is newer than the dump: keep it.
        self.confirmed = {e: t for e, t in self.confirmed.items() if t >= t0}
        newer = self.confirmed.keys()
        regs = (regs - newer) | {e for e in newer if e in self.registered}
        for ext, reg in self.pushed.items():
            if reg and ext not in regs and ext not in newer:
                self.pushed[ext] = False  # an unregistration event was lost: ask the PBX at the next link
        self.registered = regs
        self.dumped = True
        return True

    def confirm(self, ext: str) -> None:
        """A direct lookup just found ``ext`` registered."""
        self.confirmed[ext] = time.monotonic()
        self.registered.add(ext)

    def forget(self, ext: str) -> None:
        """``ext``'s binding was just removed (``ul.rm``)."""
        self.confirmed[ext] = time.monotonic()
        self.registered.discard(ext)
        self.pushed.pop(ext, None)

    def apply_event(self, ext: str, registered: bool, boot: str, seq: int) -> tuple[bool, bool]:
        """One pushed registration event; (applied, new_boot). Applied when its (boot, seq) is newer
        than the last event applied for ``ext``; a new boot (the PBX restarted: its location table
        started empty) forgets every earlier event, and the caller should reconcile with a dump."""
        new_boot = False
        if boot != self.boot:
            if boot in self.old_boots:
                self.stale += 1
                return False, False  # a late MESSAGE from before the restart
            if self.boot is not None:
                self.old_boots = [*self.old_boots, self.boot][-self.OLD_BOOTS :]
            self.boot, new_boot = boot, True
            self.seqs.clear()
            self.pushed.clear()
        if seq <= self.seqs.get(ext, -1):
            self.stale += 1
            return False, new_boot  # out of order or a retransmission
        self.seqs[ext] = seq
        self.pushed[ext] = registered
        self.confirmed[ext] = time.monotonic()
        if registered:
            self.registered.add(ext)
        else:
            self.registered.discard(ext)
        self.applied += 1
        return True, new_boot

    def link_restored(self) -> None:
        """The link came back after being down: events may have been lost meanwhile, and the PBX may have
        restarted under the same boot id (its seq then starts again from 1), so forget what events said
        and take the next ones as they come; the dump this triggers sets the view right."""
        self.seqs.clear()
        self.pushed.clear()

    def says_registered(self, ext: str) -> bool:
        """Whether the last pushed event for ``ext`` (not contradicted by a newer dump) says registered,
        with the link up: then ``link_phone`` needs no lookup."""
        return self.events and bool(self.up) and self.pushed.get(ext, False)

    def dump_pause(self, settled: bool = False) -> float:
        """Seconds between bulk dumps: ``interval``, or longer when a dump is slow (it costs the PBX).
        With events, once a dump has ``settled`` the view, only every ``reconcile`` seconds."""
        base = self.reconcile if self.events and settled else self.interval
        return max(base, self.dump_factor * self.dump_seconds)

    async def poll(self) -> bool:
        """Probe, then dump when the PBX answered (both loops in one call, for scripts and tests)."""
        if not await self.probe():
            return False
        await self.dump()
        return True

    async def lookup(self, ext: str) -> bool:
        """Whether ``ext`` is registered now (a direct ``ul.lookup``); raises PbxUnreachable."""
        self.lookups += 1
        try:
            res = await self._rpc("ul.lookup", "location", ext, timeout=aiohttp.ClientTimeout(total=1.0))
        except RpcError as err:
            # Kamailio 5.6 says {"code": 500, "message": "AOR not found in location table"}
            if err.code == 404 or "not found" in str(err).lower():
                return False
            raise PbxUnreachable(str(err)) from None
        except (TimeoutError, aiohttp.ClientError, ValueError, OSError) as err:
            raise PbxUnreachable(str(err) or type(err).__name__) from None
        return any(_live(c.get("Contact", {})) for c in (res or {}).get("Contacts", []) or [])


def _live(contact: dict[str, Any]) -> bool:
    exp = contact.get("Expires")
    return exp == "permanent" or (isinstance(exp, int | float) and exp > 0)
