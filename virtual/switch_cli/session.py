"""One CLI session on an emulated switch: the line discipline, pager, questions and mode fall-back that
Cisco IOS and Huawei VRP share; each dialect (``cisco``, ``huawei``) adds its commands, prompts and errors.

Why: the product drives switches with netmiko's ``cisco_ios`` and ``huawei`` drivers. The virtual lab
must answer those drivers exactly as a real switch would (prompts, modes, abbreviations, error texts,
pager, save confirmation), so that the real driver code runs in every test. It is written from the
vendors' behaviour, never from the drivers' command code, so a driver is never tested against its own
mirror.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from virtual.switch_cli.grammar import Grammar, Parsed
from virtual.switch_cli.ports import (
    VENDORS,
    MirrorBackend,
    MirrorSession,
    Port,
    PortBackend,
    PortTable,
    SwitchConfig,
)
from virtual.terminal import LineSessionBase

log = logging.getLogger("virtual.switch_cli")

_DIALECTS: dict[str, type[SwitchCLI]] = {}


class SwitchCLI(LineSessionBase):
    """One CLI session on an emulated switch; feed it lines, write back what it returns.

    ``SwitchCLI(hostname, vendor, ...)`` gives the vendor's dialect (a subclass). ``config`` is the
    switch-wide state; pass the same SwitchConfig to every session of one switch
    (``switch_session_factory`` does this).
    """

    VENDOR: ClassVar[str] = ""
    FACTS: ClassVar[dict[str, str]] = {}
    INITIAL_MODE: ClassVar[str] = ""
    MORE: ClassVar[str] = ""  # the pager's prompt
    PARENT_MODES: ClassVar[dict[str, str]] = {}  # a sub-view and the view it falls back to
    EXEC_ANSWER: ClassVar[str] = ""  # what an SSH exec request answers to a question (save: continue?)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.VENDOR:
            _DIALECTS[cls.VENDOR] = cls

    def __new__(cls, hostname: str, vendor: str, *args: Any, **kw: Any) -> SwitchCLI:
        dialect = _DIALECTS.get(vendor) if cls is SwitchCLI else cls
        if dialect is None or vendor not in VENDORS:
            raise ValueError(f"vendor must be one of {VENDORS}, not {vendor!r}")
        return super().__new__(dialect)

    def __init__(
        self,
        hostname: str,
        vendor: str,
        ports: list[str],
        backend: PortBackend,
        facts: dict[str, str] | None = None,
        enable_secret: str | None = None,
        *,
        config: SwitchConfig | None = None,
        page_length: int = 24,
    ) -> None:
        if vendor != self.VENDOR:
            raise ValueError(f"{type(self).__name__} is the {self.VENDOR} dialect, not {vendor!r}")
        self.hostname = hostname
        self.vendor = vendor
        self.backend = backend
        self.ports = PortTable(vendor, ports)
        self.facts = {**self.FACTS, **(facts or {})}
        self.enable_secret = enable_secret
        self.config = config if config is not None else SwitchConfig()
        self.page_length = page_length
        self.closed = False
        self.mode = self.INITIAL_MODE
        self.interface: Port | None = None
        self._pager: list[str] = []
        self._question: Callable[[str], str] | None = None
        self._question_prompt = ""
        self._echo = True
        self._grammars = self._build_grammars()

    # -- what each dialect says ----------------------------------------------------------------

    def _build_grammars(self) -> dict[str, Grammar]:
        """The commands of each mode, by mode name."""
        raise NotImplementedError

    def _error(self, parsed: Parsed, line: str, column: int) -> list[str]:
        """How the vendor reports a line it cannot parse (``column``: where the line starts)."""
        raise NotImplementedError

    def _backend_error(self, exc: Exception) -> list[str]:
        """How a failed command (say, its veth is gone) shows up at the driver."""
        raise NotImplementedError

    def _erase_more(self) -> str:
        """What wipes the pager prompt once a key is pressed."""
        raise NotImplementedError

    def _exec_mode(self) -> None:
        """Enter the mode an SSH exec request runs in (privileged where the vendor has one)."""

    # -- LineSession ---------------------------------------------------------------------------

    @property
    def echo(self) -> bool:
        return self._echo

    @property
    def more_pending(self) -> bool:
        return bool(self._pager)

    def greeting(self) -> str:
        return "\r\n" + self.prompt()

    def feed(self, line: str) -> str:
        if self._question is not None:
            answer, self._question, self._echo = self._question, None, True
            return answer(line)
        if not line.strip():
            return self.prompt()
        prompt = self.prompt()
        return self._render(self._execute(line, prompt_len=len(prompt)))

    def feed_key(self, key: str) -> str:
        erase = self._erase_more()
        if key == " ":
            count = max(self.page_length - 1, 1)
        elif key == "\r":
            count = 1
        else:
            self._pager.clear()
            return erase + "\r\n" + self.prompt()
        chunk, self._pager = self._pager[:count], self._pager[count:]
        text = erase + "".join(line + "\r\n" for line in chunk)
        return text + (self.MORE if self._pager else self.prompt())

    def interrupt(self, key: str) -> str:
        self._question, self._echo = None, True
        self._pager.clear()
        return self._interrupted(key)

    def _interrupted(self, key: str) -> str:
        return "\r\n" + self.prompt()

    # -- exec channel --------------------------------------------------------------------------

    def run(self, command: str) -> tuple[int, str, str]:
        """Run one command for an SSH exec request (privileged, no pager, defaults answered)."""
        self._exec_mode()
        lines = self._execute(command, prompt_len=0)
        if self._question is not None:
            answer, self._question, self._echo = self._question, None, True
            lines += answer(self.EXEC_ANSWER).split("\r\n")[:-1]
        text = "".join(line + "\n" for line in lines)
        failed = any(
            line.startswith(("% Invalid", "% Incomplete", "% Ambiguous", "Error:")) for line in lines
        )
        return (1 if failed else 0), text, ""

    # -- machinery -----------------------------------------------------------------------------

    def _render(self, lines: list[str]) -> str:
        if self.closed:
            return "".join(line + "\r\n" for line in lines)
        tail = self._question_prompt if self._question is not None else self.prompt()
        if self.page_length and len(lines) >= self.page_length:
            first, self._pager = lines[: self.page_length - 1], lines[self.page_length - 1 :]
            return "".join(line + "\r\n" for line in first) + self.MORE
        return "".join(line + "\r\n" for line in lines) + tail

    def _ask(self, question: str, answer: Callable[[str], str], echo: bool = True) -> None:
        self._question, self._question_prompt, self._echo = answer, question, echo

    def _execute(self, line: str, prompt_len: int, offset: int = 0) -> list[str]:
        parsed = self._grammars[self.mode].parse(line)
        parent = self.PARENT_MODES.get(self.mode)
        if parsed.error and parent:
            # Both vendors fall back to the parent view and stay there when a command fits it.
            up = self._grammars[parent].parse(line)
            if not up.error:
                self.mode, self.interface, parsed = parent, None, up
            elif up.pos > parsed.pos:
                parsed = up  # report the error where the parent view's parse got stuck
        if parsed.error:
            return self._error(parsed, line, prompt_len + offset)
        assert parsed.handler is not None
        try:
            return parsed.handler(*parsed.args)
        except Exception as exc:
            # A backend failure (say, the veth is gone) must show up at the driver, not kill the session.
            log.exception("%s: %r failed", self.hostname, line)
            return self._backend_error(exc)

    # -- state shared by both dialects ---------------------------------------------------------

    def _state(self, port: Port) -> tuple[bool, bool]:
        admin, link = self.backend.state(port.name)
        return admin, admin and link

    def _description(self, port: Port) -> str:
        with self.config.lock:
            if port.name in self.config.descriptions:
                return self.config.descriptions[port.name]
        return self.backend.description(port.name)

    def _set_description(self, text: str | None) -> list[str]:
        assert self.interface is not None
        with self.config.lock:
            self.config.descriptions[self.interface.name] = text or ""
        return []

    def _admin(self, up: bool) -> list[str]:
        assert self.interface is not None
        self.backend.set_admin(self.interface.name, up)
        return []

    def _mirror(self, session: int, change: Callable[[MirrorSession], None] | None) -> None:
        """Apply a change to one mirror session (None deletes it) and push it to the backend."""
        with self.config.lock:
            mirror = self.config.mirrors.setdefault(session, MirrorSession())
            if change is None:
                mirror.sources.clear()
                mirror.destination = None
            else:
                change(mirror)
            if not mirror.sources and mirror.destination is None:
                del self.config.mirrors[session]
            if isinstance(self.backend, MirrorBackend):
                self.backend.set_mirror(session, dict(mirror.sources), mirror.destination)

    def _save(self) -> None:
        with self.config.lock:
            self.config.saves += 1

    def _enter_interface(self, port: Port, mode: str) -> list[str]:
        self.mode, self.interface = mode, port
        return []

    def _set_mode(self, mode: str, lines: list[str] | None = None) -> list[str]:
        self.mode = mode
        if mode not in self.PARENT_MODES:
            self.interface = None
        return lines or []

    def _logout(self) -> list[str]:
        self.closed = True
        return []

    def _interface_config(self, port: Port) -> list[str]:
        """The ``interface`` stanza both vendors share: name, description, shutdown."""
        lines = [f"interface {port.full}"]
        description = self._description(port)
        if description:
            lines.append(f" description {description}")
        if not self._state(port)[0]:
            lines.append(" shutdown")
        return lines


def uptime_parts(seconds: float) -> tuple[int, int, int, int]:
    """(weeks, days, hours, minutes) as both vendors' version banners count them."""
    minutes = int(seconds // 60)
    weeks, rest = divmod(minutes, 7 * 24 * 60)
    days, rest = divmod(rest, 24 * 60)
    hours, mins = divmod(rest, 60)
    return weeks, days, hours, mins


def mac_address(base: str, offset: int, sep: str) -> str:
    """The MAC ``offset`` after ``base``, in groups of four hex digits joined by ``sep``."""
    value = (int(base.replace(":", "").replace("-", "").replace(".", ""), 16) + offset) & (2**48 - 1)
    digits = f"{value:012x}"
    return sep.join(digits[i : i + 4] for i in range(0, 12, 4))


def switch_session_factory(
    hostname: str,
    vendor: str,
    ports: list[str],
    backend: PortBackend,
    facts: dict[str, str] | None = None,
    enable_secret: str | None = None,
    config: SwitchConfig | None = None,
) -> Callable[[str], SwitchCLI]:
    """A session_factory for SSHServer / PtyConsole: new sessions on one shared SwitchConfig."""
    shared = config if config is not None else SwitchConfig()

    def factory(username: str = "") -> SwitchCLI:
        return SwitchCLI(hostname, vendor, ports, backend, facts, enable_secret, config=shared)

    factory.config = shared  # type: ignore[attr-defined]
    return factory
