"""How the CTI follows its PBX (stack/cti/pbxlink.py) and tells its agents.

Why it is built this way:
- Two loops. Liveness: a cheap probe every ``poll_interval``; a link change reaches every client at once,
  well inside two heartbeats. Registrations: a bulk dump while the link is up, paced by how long a dump
  takes; with pushed events (``--pbx-events``) only a reconciliation, at start, on link up, on a new PBX
  boot and every ``reconcile`` s (30). At 10,000 agents the per-link ``ul.lookup``s of a failover storm
  queued behind the dumps in Kamailio's few HTTP workers (379 of 5,000 links failed ``pbx_unreachable``,
  link p50 1.3 s): pushed registrations made most of them unnecessary.
- A pushed event reaches the linked agent of its extension at once, found through the session table's
  index by extension.
- An agent fenced away from this site leaves no binding at this site's PBX (``unbind``); a removal the
  PBX could not take yet is retried after the next good dump.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from urllib.parse import urlsplit

import aiohttp

from stack.cti.pbxlink import PbxLink, RpcError
from stack.cti.sessions import Session

log = logging.getLogger("stack.cti")


class PbxWatch:
    """The PBX loops of a site's CTI; mixed into CtiServer, whose ``__init__`` sets the state below and
    whose session table (stack/cti/sessions.py) gives ``_sessions_of``, ``push`` and ``_broadcast``."""

    site: str
    pbx: PbxLink
    sessions: dict[str, Session]
    unbind_pending: set[str]
    unbound: int
    _dump_now: asyncio.Event

    async def _poll_loop(self) -> None:
        """Liveness: a cheap probe every ``interval``; link changes go to every client at once."""
        while True:
            t0 = time.monotonic()
            was_up = self.pbx.up
            await self.pbx.probe()
            if self.pbx.take_restart():
                boot = self.pbx.sip_boot
                log.warning("cti %s: PBX restarted (boot %s): reconciling registrations", self.site, boot)
                self._dump_now.set()
            if self.pbx.up != was_up and self.pbx.up is not None:
                self._broadcast({"type": "event", "event": "pbx_link_up" if self.pbx.up else "pbx_link_down"})
                log.warning("cti %s: PBX link %s", self.site, "up" if self.pbx.up else "down")
                if self.pbx.up:
                    if was_up is False:
                        self.pbx.link_restored()
                    self._dump_now.set()
            await asyncio.sleep(max(0.0, self.pbx.interval - (time.monotonic() - t0)))

    async def _dump_loop(self) -> None:
        """Registrations: a bulk dump while the link is up, paced by how long a dump takes. With events,
        a reconciliation: at start, on link up, on a new PBX boot, and every ``reconcile`` s."""
        while True:
            self._dump_now.clear()  # a request made during the dump below asks for another one
            settled = False
            if self.pbx.up:
                before = self.pbx.registered
                if await self.pbx.dump() and self.pbx.up:
                    settled = True
                    self._phone_changes(before)
                    for ext in list(self.unbind_pending):
                        if ext in self.pbx.registered:
                            await self.unbind(ext)
                        else:
                            self.unbind_pending.discard(ext)
            settled = settled and not self.unbind_pending
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dump_now.wait(), self.pbx.dump_pause(settled))

    def _pbx_event(self, ext: str, registered: bool, boot: str, seq: int) -> None:
        """A registration event from the PBX: applied if newer, and the linked agent told at once."""
        applied, new_boot = self.pbx.apply_event(ext, registered, boot, seq)
        if new_boot:
            log.info("cti %s: PBX boot %s: reconciling registrations", self.site, boot)
            self._dump_now.set()
        if not applied:
            return
        now = "registered" if registered else "unregistered"
        for s in self._sessions_of(ext):
            if now != s.phone and self.pbx.up:
                s.phone = now
                if s.linked:
                    self.push(s, {"type": "event", "event": f"phone_{now}", "extension": ext})

    def _pbx_hosts(self) -> set[str] | None:
        """The PBX's addresses (RPC and SIP hosts) events are accepted from; None (any) for a name."""
        hosts = {urlsplit(self.pbx.rpc_url).hostname if self.pbx.rpc_url else None}
        hosts.add(self.pbx.sip[0] if self.pbx.sip else None)
        out: set[str] = set()
        for h in hosts - {None}:
            try:
                out.add(str(ipaddress.ip_address(h)))
            except ValueError:
                return None
        return out or None

    def _phone_changes(self, before: set[str]) -> None:
        regs = self.pbx.registered
        if regs is before:
            return
        for s in self.sessions.values():
            now = "registered" if s.extension in regs else "unregistered"
            if now != s.phone:
                s.phone = now
                if s.linked:
                    self.push(s, {"type": "event", "event": f"phone_{now}", "extension": s.extension})

    def phone_state(self, ext: str) -> str:
        if not self.pbx.rpc_url or not self.pbx.up or not self.pbx.dumped:
            return "unknown"
        return "registered" if ext in self.pbx.registered else "unregistered"

    def link_state(self) -> str:
        return "up" if self.pbx.up else "down"

    async def unbind(self, ext: str) -> bool:
        """Remove ``ext``'s registration from this site's PBX (``ul.rm location <ext>``), unless an agent
        active here now uses it; True when removed."""
        if any(s.extension == ext for s in self.sessions.values()):
            return False
        try:
            await self.pbx._rpc("ul.rm", "location", ext, timeout=aiohttp.ClientTimeout(total=2.0))
        except RpcError:
            return False  # 404: nothing registered
        except (TimeoutError, aiohttp.ClientError, ValueError, AttributeError, OSError) as err:
            # the PBX may still be cut off (a site coming back heals its ports one by one): retry after
            # the next successful dump, or the stale binding outlives the fence
            self.unbind_pending.add(ext)
            log.warning("cti %s: could not remove the binding of %s yet: %s", self.site, ext, err)
            # ... and that dump soon, not at the next reconciliation (30 s with pushed events): a binding
            # left that long outlived the final read of test_gray's hung PBX under load (double registration)
            asyncio.get_running_loop().call_later(1.0, self._dump_now.set)
            return False
        self.unbind_pending.discard(ext)
        self.pbx.forget(ext)
        self.unbound += 1
        log.info("cti %s: removed the stale binding of %s from the PBX", self.site, ext)
        return True
