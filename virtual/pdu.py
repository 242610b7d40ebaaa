"""An emulated switched PDU (APC Rack PDU style CLI) on a serial console.

Why: the product's power driver switches outlets through a PDU's serial CLI, as it would on a physical
AP7900 behind a console server. The virtual lab serves the same CLI on a real pseudo-terminal (see
virtual/console.py), so the real driver code runs in every test. What an outlet powers is the keeper's
business: it hands in a backend that kills a host's services and drops its links (off), or brings the
links up and starts the services again (on).

The CLI (APC AOS 6.x, the subset a driver needs)::

    User Name : admin
    Password  : ********
    apc>olStatus 1            apc>olOff 1          apc>olOn 1          apc>olStatus all
    E000: Success             E000: Success        E000: Success       E000: Success
     1: sha-pbx1: On                                                    1: sha-pbx1: On
                                                                        2: sha-cti1: Off
    apc>exit

Errors as on the real unit: ``E101: Command Not Found``, ``E102: Parameter Error``.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from virtual.terminal import LineSessionBase

log = logging.getLogger(__name__)

BANNER = (
    "\r\n\r\nAmerican Power Conversion               Network Management Card AOS      v6.9.6\r\n"
    "(c) Copyright 2020 All Rights Reserved  RPDU 2g v6.9.6\r\n"
    "-------------------------------------------------------------------------------\r\n"
)


class OutletBackend(Protocol):
    """What the outlets switch: the keeper's hosts in the virtual lab."""

    def outlet_on(self, outlet: str) -> bool: ...

    def set_outlet(self, outlet: str, on: bool) -> None: ...


class PowerBackend:
    """Outlet states of one PDU; switching calls ``power(device, on)`` once per real change.

    Outlets start On (the lab boots powered). ``power`` runs outside the state lock so a slow host
    (services stopping) does not block status reads from another console client.
    """

    def __init__(self, outlets: dict[str, str], power: Callable[[str, bool], None]) -> None:
        self.outlets = dict(outlets)  # outlet -> device it feeds
        self._power = power
        self._state = dict.fromkeys(outlets, True)
        self._lock = threading.Lock()

    def outlet_on(self, outlet: str) -> bool:
        with self._lock:
            return self._state[outlet]

    def set_outlet(self, outlet: str, on: bool) -> None:
        with self._lock:
            if self._state[outlet] == on:
                return
            self._state[outlet] = on
        log.info("pdu outlet %s (%s) %s", outlet, self.outlets[outlet], "on" if on else "off")
        self._power(self.outlets[outlet], on)


class PduCLI(LineSessionBase):
    """One console session: login, then ``apc>`` commands."""

    def __init__(self, hostname: str, outlets: dict[str, str], backend: OutletBackend, users: dict[str, str]):
        self.hostname = hostname
        self.outlets = outlets  # outlet -> name shown (the device it feeds)
        self.backend = backend
        self.users = users
        self._user: str | None = None
        self._logged_in = not users

    @property
    def echo(self) -> bool:
        return self._logged_in or self._user is None

    def prompt(self) -> str:
        if self._logged_in:
            return "apc>"
        return "User Name : " if self._user is None else "Password  : "

    def greeting(self) -> str:
        return "\r\n" + self.prompt()

    def interrupt(self, key: str) -> str:
        if not self._logged_in:
            self._user = None
        return "\r\n" + self.prompt()

    def feed(self, line: str) -> str:
        if not self._logged_in:
            return self._login(line)
        words = line.split()
        if not words:
            return self.prompt()
        cmd, args = words[0].lower(), words[1:]
        if cmd in ("exit", "quit", "bye", "logout"):
            self.closed = True
            return "Bye.\r\n"
        if cmd in ("olstatus", "olon", "oloff"):
            return self._outlets(cmd, args) + self.prompt()
        if cmd in ("help", "?"):
            return "E000: Success\r\nolStatus olOn olOff exit\r\n" + self.prompt()
        return "E101: Command Not Found\r\n" + self.prompt()

    def _login(self, line: str) -> str:
        if self._user is None:
            self._user = line.strip()
            return self.prompt()
        user, self._user = self._user, None
        want = self.users.get(user)
        if want is not None and hmac.compare_digest(want.encode(), line.encode()):
            self._logged_in = True
            return BANNER + self.prompt()
        return "\r\n" + self.prompt()

    def _select(self, args: list[str]) -> list[str] | None:
        if len(args) != 1:
            return None
        if args[0].lower() == "all":
            return list(self.outlets)
        picked: list[str] = []
        for part in args[0].split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                return None
            for n in range(int(lo), int(hi or lo) + 1):
                if str(n) not in self.outlets:
                    return None
                picked.append(str(n))
        return picked

    def _outlets(self, cmd: str, args: list[str]) -> str:
        chosen = self._select(args)
        if chosen is None:
            return "E102: Parameter Error\r\n"
        if cmd == "olstatus":
            on = {n: "On" if self.backend.outlet_on(n) else "Off" for n in chosen}
            rows = [f"{n:>2}: {self.outlets[n]}: {on[n]}\r\n" for n in chosen]
            return "E000: Success\r\n" + "".join(rows)
        for n in chosen:
            self.backend.set_outlet(n, cmd == "olon")
        return "E000: Success\r\n"


def pdu_session_factory(
    hostname: str, outlets: dict[str, str], backend: OutletBackend, users: dict[str, str]
) -> Callable[[], PduCLI]:
    """A console factory: a fresh login session after each logout, all on one backend."""

    def factory() -> PduCLI:
        return PduCLI(hostname, outlets, backend, users)

    return factory
