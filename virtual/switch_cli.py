"""Emulated switch CLI (Cisco IOS, Huawei VRP), independent of transport.

Why: the product drives switches with netmiko's ``cisco_ios`` and ``huawei`` drivers. The virtual lab
must answer those drivers exactly as a real switch would (prompts, modes, abbreviations, error texts,
pager, save confirmation), so that the real driver code runs in every test. Port state lives in a
``PortBackend`` (the keeper's veths); what a CLI session changes that outlives it (descriptions,
SPAN sessions, saves) lives in a ``SwitchConfig`` shared by all sessions of one switch.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from virtual.terminal import LineSessionBase

log = logging.getLogger(__name__)

VENDORS = ("cisco_ios", "huawei")


class PortBackend(Protocol):
    """Where port state really lives (the keeper: one veth per switch port)."""

    def set_admin(self, port: str, up: bool) -> None: ...

    def state(self, port: str) -> tuple[bool, bool]:
        """Return (admin up, link up)."""
        ...

    def description(self, port: str) -> str: ...


@runtime_checkable
class MirrorBackend(Protocol):
    """Optional: a backend that also implements SPAN (for example with tc mirred)."""

    def set_mirror(self, session: int, sources: dict[str, str], destination: str | None) -> None:
        """Apply one mirror session: sources maps port name to "rx", "tx" or "both"."""
        ...


@dataclass
class MirrorSession:
    sources: dict[str, str] = field(default_factory=dict)
    destination: str | None = None


class SwitchConfig:
    """State of one switch shared by all its CLI sessions, so a change outlives the session."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.descriptions: dict[str, str] = {}
        self.mirrors: dict[int, MirrorSession] = {}
        self.saves = 0
        self.boot_time = time.time()


# ---------------------------------------------------------------------------------------------
# Interface names


_TYPES: dict[str, dict[str, str]] = {
    "cisco_ios": {
        "GigabitEthernet": "Gi",
        "FastEthernet": "Fa",
        "TenGigabitEthernet": "Te",
        "TwoGigabitEthernet": "Tw",
        "TwentyFiveGigE": "Twe",
        "FortyGigabitEthernet": "Fo",
        "HundredGigE": "Hu",
        "Ethernet": "Et",
    },
    "huawei": {
        "GigabitEthernet": "GE",
        "XGigabitEthernet": "XGE",
        "MultiGE": "MultiGE",
        "25GE": "25GE",
        "40GE": "40GE",
        "100GE": "100GE",
        "Ethernet": "Eth",
    },
}
_IFNAME = re.compile(r"^(\d+GE|[A-Za-z][A-Za-z-]*?)\s*(\d+(?:/\d+)*)$", re.I)


@dataclass(frozen=True)
class Port:
    name: str  # as the keeper named it; what the backend is called with
    full: str  # GigabitEthernet0/3
    short: str  # Gi0/3
    index: int


def _split_type(vendor: str, text: str, present: set[str] | None = None) -> tuple[str, str] | None:
    """Resolve 'gi0/3' / 'GE 0/0/3' to (full type name, number) the way the vendor CLI does."""
    m = _IFNAME.match(text.strip())
    if not m:
        return None
    typ, num = m.group(1).lower(), m.group(2)
    types = _TYPES[vendor]
    exact = [full for full, short in types.items() if short.lower() == typ or full.lower() == typ]
    cands = exact or [full for full in types if full.lower().startswith(typ)]
    if len(cands) > 1 and present:
        cands = [c for c in cands if c in present]
    return (cands[0], num) if len(cands) == 1 else None


class PortTable:
    """The switch's ports, found by any spelling the vendor CLI accepts."""

    def __init__(self, vendor: str, names: list[str]) -> None:
        self.vendor = vendor
        self.ports: list[Port] = []
        for index, name in enumerate(names, start=1):
            split = _split_type(vendor, name)
            if split:
                full = split[0] + split[1]
                short = _TYPES[vendor][split[0]] + split[1]
            else:
                full = short = name
            self.ports.append(Port(name=name, full=full, short=short, index=index))
        self._by_full = {p.full.lower(): p for p in self.ports}
        self._by_full.update({p.name.lower(): p for p in self.ports})
        self._present = {_split_type(vendor, p.full)[0] for p in self.ports if _split_type(vendor, p.full)}

    def resolve(self, text: str) -> Port | None:
        port = self._by_full.get(text.strip().lower())
        if port:
            return port
        split = _split_type(self.vendor, text, self._present)
        return self._by_full.get((split[0] + split[1]).lower()) if split else None

    def by_name(self, name: str) -> Port:
        return self._by_full[name.lower()]


# ---------------------------------------------------------------------------------------------
# Command grammar: keyword trees with unique-prefix abbreviation, as both vendors parse


class _Node:
    __slots__ = ("words", "params", "handler")

    def __init__(self) -> None:
        self.words: dict[str, _Node] = {}
        self.params: list[tuple[str, _Node]] = []
        self.handler: Callable[..., list[str]] | None = None


@dataclass
class _Parsed:
    handler: Callable[..., list[str]] | None = None
    args: list[Any] = field(default_factory=list)
    error: str = ""  # "invalid" | "incomplete" | "ambiguous" | "wrong"
    pos: int = 0


class Grammar:
    """Commands of one CLI mode. Specs are words plus <if>, <num>, <word>, <rest> parameters."""

    def __init__(self, ports: PortTable) -> None:
        self.root = _Node()
        self.ports = ports

    def add(self, spec: str, handler: Callable[..., list[str]]) -> None:
        node = self.root
        for tok in spec.split():
            if tok.startswith("<"):
                child = next((c for kind, c in node.params if kind == tok), None)
                if child is None:
                    child = _Node()
                    node.params.append((tok, child))
                node = child
            else:
                node = node.words.setdefault(tok.lower(), _Node())
        node.handler = handler

    def parse(self, line: str) -> _Parsed:
        tokens = [(m.start(), m.group()) for m in re.finditer(r"\S+", line)]
        node, args, i = self.root, [], 0
        while i < len(tokens):
            pos, tok = tokens[i]
            low = tok.lower()
            words = [low] if low in node.words else [w for w in node.words if w.startswith(low)]
            if len(words) == 1:
                node, i = node.words[words[0]], i + 1
                continue
            if len(words) > 1:
                return _Parsed(error="ambiguous", pos=pos)
            for kind, child in node.params:
                got = self._param(kind, line, tokens, i)
                if got is not None:
                    value, used = got
                    args.append(value)
                    node, i = child, i + used
                    break
            else:
                return _Parsed(error="wrong" if node.params and not node.words else "invalid", pos=pos)
        if node.handler is None:
            return _Parsed(error="incomplete", pos=len(line.rstrip()))
        return _Parsed(handler=node.handler, args=args)

    def _param(self, kind: str, line: str, tokens: list[tuple[int, str]], i: int) -> tuple[Any, int] | None:
        pos, tok = tokens[i]
        if kind == "<num>":
            return (int(tok), 1) if tok.isdigit() else None
        if kind == "<word>":
            return tok, 1
        if kind == "<rest>":
            return line[pos:].strip(), len(tokens) - i
        if kind == "<if>":
            port = self.ports.resolve(tok)
            if port:
                return port, 1
            if i + 1 < len(tokens):
                port = self.ports.resolve(tok + tokens[i + 1][1])
                if port:
                    return port, 2
            return None
        raise ValueError(f"unknown parameter kind {kind}")


# ---------------------------------------------------------------------------------------------
# Facts and formatting helpers

_DEFAULT_FACTS: dict[str, dict[str, str]] = {
    "cisco_ios": {
        "model": "WS-C2960X-48TS-L",
        "version": "15.2(7)E8",
        "image": "C2960X-UNIVERSALK9-M",
        "image_file": "flash:c2960x-universalk9-mz.152-7.E8.bin",
        "serial": "FOC2118X0AB",
        "base_mac": "52:54:00:12:34:00",
    },
    "huawei": {
        "model": "S5720-28X-SI-AC",
        "vrp_version": "5.170",
        "version": "V200R019C10SPC500",
        "serial": "2102351931DMK8000123",
        "base_mac": "52:54:00:12:34:00",
    },
}


def _uptime_parts(seconds: float) -> tuple[int, int, int, int]:
    minutes = int(seconds // 60)
    weeks, rest = divmod(minutes, 7 * 24 * 60)
    days, rest = divmod(rest, 24 * 60)
    hours, mins = divmod(rest, 60)
    return weeks, days, hours, mins


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def _mac(base: str, offset: int, sep: str) -> str:
    value = (int(base.replace(":", "").replace("-", "").replace(".", ""), 16) + offset) & (2**48 - 1)
    digits = f"{value:012x}"
    return sep.join(digits[i : i + 4] for i in range(0, 12, 4))


_CISCO_ERRORS = {
    "invalid": "% Invalid input detected at '^' marker.",
    "wrong": "% Invalid input detected at '^' marker.",
}
_HUAWEI_ERRORS = {
    "invalid": "Error: Unrecognized command found at '^' position.",
    "wrong": "Error: Wrong parameter found at '^' position.",
    "incomplete": "Error: Incomplete command found at '^' position.",
    "ambiguous": "Error: Ambiguous command found at '^' position.",
}
_MORE = {"cisco_ios": " --More-- ", "huawei": "  ---- More ----"}


# ---------------------------------------------------------------------------------------------


class SwitchCLI(LineSessionBase):
    """One CLI session on an emulated switch; feed it lines, write back what it returns.

    ``config`` is the switch-wide state; pass the same SwitchConfig to every session of one switch
    (``switch_session_factory`` does this).
    """

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
        if vendor not in VENDORS:
            raise ValueError(f"vendor must be one of {VENDORS}, not {vendor!r}")
        self.hostname = hostname
        self.vendor = vendor
        self.backend = backend
        self.ports = PortTable(vendor, ports)
        self.facts = {**_DEFAULT_FACTS[vendor], **(facts or {})}
        self.enable_secret = enable_secret
        self.config = config if config is not None else SwitchConfig()
        self.page_length = page_length
        self.closed = False
        self.mode = "exec" if vendor == "cisco_ios" else "user"
        self.interface: Port | None = None
        self._pager: list[str] = []
        self._question: Callable[[str], str] | None = None
        self._question_prompt = ""
        self._echo = True
        self._grammars = self._cisco_grammars() if vendor == "cisco_ios" else self._huawei_grammars()

    # -- LineSession ---------------------------------------------------------------------------

    @property
    def echo(self) -> bool:
        return self._echo

    @property
    def more_pending(self) -> bool:
        return bool(self._pager)

    def prompt(self) -> str:
        h = self.hostname
        if self.vendor == "cisco_ios":
            return {
                "exec": f"{h}>",
                "priv": f"{h}#",
                "config": f"{h}(config)#",
                "config-if": f"{h}(config-if)#",
            }[self.mode]
        if self.mode == "user":
            return f"<{h}>"
        if self.mode == "system":
            return f"[{h}]"
        assert self.interface is not None
        return f"[{h}-{self.interface.full}]"

    def greeting(self) -> str:
        if self.vendor == "huawei":
            now = time.strftime("%Y-%m-%d %H:%M:%S")
            return (
                "\r\nInfo: The max number of VTY users is 10, and the number\r\n"
                "      of current VTY users on line is 1.\r\n"
                f"      The current login time is {now}.\r\n" + self.prompt()
            )
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
        marker = _MORE[self.vendor]
        if self.vendor == "huawei":
            erase = f"\x1b[{len(marker)}D" + " " * len(marker) + f"\x1b[{len(marker)}D"
        else:
            erase = "\b" * len(marker) + " " * len(marker) + "\b" * len(marker)
        if key == " ":
            count = max(self.page_length - 1, 1)
        elif key == "\r":
            count = 1
        else:
            self._pager.clear()
            return erase + "\r\n" + self.prompt()
        chunk, self._pager = self._pager[:count], self._pager[count:]
        text = erase + "".join(line + "\r\n" for line in chunk)
        return text + (marker if self._pager else self.prompt())

    def interrupt(self, key: str) -> str:
        self._question, self._echo = None, True
        self._pager.clear()
        if self.vendor == "cisco_ios":
            if self.mode in ("config", "config-if"):
                self.mode, self.interface = "priv", None
                return "^Z\r\n" + self.prompt()
            return "^C\r\n" + self.prompt()
        if key == "\x1a" and self.mode != "user":
            self.mode, self.interface = "user", None
        return "\r\n" + self.prompt()

    # -- exec channel --------------------------------------------------------------------------

    def run(self, command: str) -> tuple[int, str, str]:
        """Run one command for an SSH exec request (privileged, no pager, defaults answered)."""
        if self.vendor == "cisco_ios" and self.mode == "exec":
            self.mode = "priv"
        lines = self._execute(command, prompt_len=0)
        if self._question is not None:
            answer, self._question, self._echo = self._question, None, True
            lines += answer("y" if self.vendor == "huawei" else "").split("\r\n")[:-1]
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
            return "".join(line + "\r\n" for line in first) + _MORE[self.vendor]
        return "".join(line + "\r\n" for line in lines) + tail

    def _ask(self, question: str, answer: Callable[[str], str], echo: bool = True) -> None:
        self._question, self._question_prompt, self._echo = answer, question, echo

    def _execute(self, line: str, prompt_len: int, offset: int = 0) -> list[str]:
        parsed = self._grammars[self.mode].parse(line)
        parent = {"config-if": "config", "interface": "system"}.get(self.mode)
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
            return [f"% Error: {exc}", ""] if self.vendor == "cisco_ios" else [f"Error: {exc}"]

    def _error(self, parsed: _Parsed, line: str, column: int) -> list[str]:
        caret = " " * (column + parsed.pos) + "^"
        if self.vendor == "huawei":
            return [caret, _HUAWEI_ERRORS[parsed.error]]
        if parsed.error == "incomplete":
            return ["% Incomplete command.", ""]
        if parsed.error == "ambiguous":
            return [f'% Ambiguous command:  "{line.strip()}"']
        return [caret, _CISCO_ERRORS[parsed.error], ""]

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
        if mode not in ("config-if", "interface"):
            self.interface = None
        return lines or []

    def _logout(self) -> list[str]:
        self.closed = True
        return []

    def _terminal_length(self, n: int) -> list[str]:
        self.page_length = n
        return []

    # -- Cisco IOS -----------------------------------------------------------------------------

    def _cisco_grammars(self) -> dict[str, Grammar]:
        user = Grammar(self.ports)
        user.add("enable", self._ios_enable)
        for word in ("exit", "logout", "quit"):
            user.add(word, self._logout)
        user.add("terminal length <num>", self._terminal_length)
        user.add("terminal width <num>", lambda n: [])
        user.add("terminal monitor", lambda: [])
        user.add("terminal no monitor", lambda: [])
        user.add("show version", self._ios_show_version)
        user.add("show interfaces", self._ios_show_interfaces)
        user.add("show interfaces <if>", self._ios_show_interfaces)
        user.add("show interfaces status", self._ios_show_status)
        user.add("show interfaces description", self._ios_show_description)
        user.add("show privilege", lambda: [f"Current privilege level is {15 if self.mode == 'priv' else 1}"])

        priv = Grammar(self.ports)
        for spec, handler in _walk(user.root):
            if spec != "enable":
                priv.add(spec, handler)
        priv.add("enable", lambda: [])
        priv.add("disable", lambda: self._set_mode("exec"))
        priv.add("configure terminal", self._ios_configure)
        priv.add("show running-config", self._ios_show_run)
        priv.add("show running-config interface <if>", self._ios_show_run)
        priv.add("show monitor", self._ios_show_monitor)
        priv.add("show monitor session all", self._ios_show_monitor)
        priv.add("show monitor session <num>", self._ios_show_monitor)
        priv.add("write", self._ios_write)
        priv.add("write memory", self._ios_write)
        priv.add("copy running-config startup-config", self._ios_copy)

        config = Grammar(self.ports)
        config.add("interface <if>", lambda port: self._enter_interface(port, "config-if"))
        config.add("monitor session <num> source interface <if>", self._ios_span_source)
        for direction in ("both", "rx", "tx"):
            config.add(
                f"monitor session <num> source interface <if> {direction}",
                lambda n, port, d=direction: self._ios_span_source(n, port, d),
            )
        config.add("monitor session <num> destination interface <if>", self._ios_span_destination)
        config.add("no monitor session <num>", self._span_delete)
        config.add("no monitor session all", self._ios_span_clear)
        config.add("no monitor session <num> source interface <if>", self._ios_span_remove_source)
        config.add("no monitor session <num> destination interface <if>", self._ios_span_remove_dest)
        config.add("end", lambda: self._set_mode("priv"))
        config.add("exit", lambda: self._set_mode("priv"))
        config.add("do <rest>", self._ios_do)

        iface = Grammar(self.ports)
        iface.add("shutdown", lambda: self._admin(False))
        iface.add("no shutdown", lambda: self._admin(True))
        iface.add("description <rest>", self._set_description)
        iface.add("no description", lambda: self._set_description(None))
        iface.add("end", lambda: self._set_mode("priv"))
        iface.add("exit", lambda: self._set_mode("config"))
        iface.add("do <rest>", self._ios_do)
        return {"exec": user, "priv": priv, "config": config, "config-if": iface}

    def _ios_enable(self) -> list[str]:
        if not self.enable_secret:
            return self._set_mode("priv")
        tries = [0]

        def answer(secret: str) -> str:
            if hmac.compare_digest(secret.encode(), (self.enable_secret or "").encode()):
                self.mode = "priv"
                return self.prompt()
            tries[0] += 1
            if tries[0] >= 3:
                return "% Bad secrets\r\n\r\n" + self.prompt()
            self._ask("Password: ", answer, echo=False)
            return "Password: "

        self._ask("Password: ", answer, echo=False)
        return []

    def _ios_configure(self) -> list[str]:
        return self._set_mode("config", ["Enter configuration commands, one per line.  End with CNTL/Z."])

    def _ios_do(self, rest: str) -> list[str]:
        mode, iface = self.mode, self.interface
        self.mode = "priv"
        try:
            prompt = self.hostname + ("(config-if)#" if mode == "config-if" else "(config)#")
            lines = self._execute(rest, prompt_len=len(prompt), offset=3)
        finally:
            if self.mode == "priv":  # exec commands never change mode; restore the config mode
                self.mode, self.interface = mode, iface
        return lines

    def _ios_write(self) -> list[str]:
        self._save()
        return ["Building configuration...", "[OK]"]

    def _ios_copy(self) -> list[str]:
        def answer(reply: str) -> str:
            if reply.strip() not in ("", "startup-config"):
                return "%Error opening " + reply.strip() + " (No such file or directory)\r\n" + self.prompt()
            self._save()
            return "Building configuration...\r\n[OK]\r\n" + self.prompt()

        self._ask("Destination filename [startup-config]? ", answer)
        return []

    def _ios_status(self, port: Port) -> tuple[str, str, str]:
        """(line state, protocol, status word) as IOS prints them."""
        admin, link = self._state(port)
        if not admin:
            return "administratively down", "down", "disabled"
        return ("up", "up", "connected") if link else ("down", "down", "notconnect")

    def _ios_show_version(self) -> list[str]:
        f = self.facts
        weeks, days, hours, mins = _uptime_parts(time.time() - self.config.boot_time)
        parts = [_plural(n, u) for n, u in ((weeks, "week"), (days, "day"), (hours, "hour")) if n]
        uptime = ", ".join(parts + [_plural(mins, "minute")])
        model = f["model"]
        family = f.get("family") or (model.split("-")[1] if model.startswith("WS-") else model.split("-")[0])
        mac = _mac(f["base_mac"], 0, "")
        mac = ":".join(mac[i : i + 2] for i in range(0, 12, 2))
        n_ports = len(self.ports.ports)
        return [
            f"Cisco IOS Software, {family} Software ({f['image']}), Version {f['version']}, "
            "RELEASE SOFTWARE (fc2)",
            "Technical Support: http://www.cisco.com/techsupport",
            "Copyright (c) 1986-2023 by Cisco Systems, Inc.",
            "Compiled Tue 28-Feb-23 03:43 by mcpre",
            "",
            f"ROM: Bootstrap program is {family} boot loader",
            f"BOOTLDR: {family} Boot Loader ({family}-HBOOT-M) Version 15.2(3r)E1, RELEASE SOFTWARE (fc1)",
            "",
            f"{self.hostname} uptime is {uptime}",
            "System returned to ROM by power-on",
            f'System image file is "{f["image_file"]}"',
            "",
            "",
            f"cisco {f['model']} (APM86XXX) processor (revision D0) with 524288K bytes of memory.",
            f"Processor board ID {f['serial']}",
            "Last reload reason: power-on",
            "",
            "1 Virtual Ethernet interface",
            f"{n_ports} Gigabit Ethernet interfaces",
            "The password-recovery mechanism is enabled.",
            "",
            "512K bytes of flash-simulated non-volatile configuration memory.",
            f"Base ethernet MAC Address       : {mac}",
            f"Model number                    : {f['model']}",
            f"System serial number            : {f['serial']}",
            "",
            "Switch Ports Model                     SW Version            SW Image",
            "------ ----- -----                     ----------            ----------",
            f"*    1 {n_ports:<5} {f['model']:<25} {f['version']:<21} {f['image']}",
            "",
            "",
            "Configuration register is 0xF",
            "",
        ]

    def _ios_show_status(self) -> list[str]:
        lines = ["", "Port      Name               Status       Vlan       Duplex  Speed Type"]
        for port in self.ports.ports:
            _, _, status = self._ios_status(port)
            duplex, speed = ("a-full", "a-1000") if status == "connected" else ("auto", "auto")
            name = self._description(port)[:18]
            lines.append(
                f"{port.short:<9} {name:<18} {status:<12} {'1':<10} {duplex:>6} {speed:>6} 10/100/1000BaseTX"
            )
        return lines

    def _ios_show_description(self) -> list[str]:
        lines = ["Interface                      Status         Protocol Description"]
        for port in self.ports.ports:
            line, proto, _ = self._ios_status(port)
            status = "admin down" if line.startswith("admin") else line
            lines.append(f"{port.short:<30} {status:<14} {proto:<8} {self._description(port)}".rstrip())
        return lines

    def _ios_show_interfaces(self, only: Port | None = None) -> list[str]:
        lines: list[str] = []
        for port in [only] if only else self.ports.ports:
            line, proto, status = self._ios_status(port)
            mac = _mac(self.facts["base_mac"], port.index, ".")
            lines.append(f"{port.full} is {line}, line protocol is {proto} ({status})")
            lines.append(f"  Hardware is Gigabit Ethernet, address is {mac} (bia {mac})")
            description = self._description(port)
            if description:
                lines.append(f"  Description: {description}")
            speed = "Full-duplex, 1000Mb/s" if status == "connected" else "Auto-duplex, Auto-speed"
            lines += [
                "  MTU 1500 bytes, BW 1000000 Kbit/sec, DLY 10 usec,",
                "     reliability 255/255, txload 1/255, rxload 1/255",
                "  Encapsulation ARPA, loopback not set",
                "  Keepalive set (10 sec)",
                f"  {speed}, media type is 10/100/1000BaseTX",
                "  input flow-control is off, output flow-control is unsupported",
                "  ARP type: ARPA, ARP Timeout 04:00:00",
                "  Last input never, output never, output hang never",
                '  Last clearing of "show interface" counters never',
                "  Input queue: 0/75/0/0 (size/max/drops/flushes); Total output drops: 0",
                "  Queueing strategy: fifo",
                "  Output queue: 0/40 (size/max)",
                "  5 minute input rate 0 bits/sec, 0 packets/sec",
                "  5 minute output rate 0 bits/sec, 0 packets/sec",
                "     0 packets input, 0 bytes, 0 no buffer",
                "     0 input errors, 0 CRC, 0 frame, 0 overrun, 0 ignored",
                "     0 packets output, 0 bytes, 0 underruns",
                "     0 output errors, 0 collisions, 1 interface resets",
            ]
        return lines

    def _interface_config(self, port: Port) -> list[str]:
        """The ``interface`` stanza both vendors share: name, description, shutdown."""
        lines = [f"interface {port.full}"]
        description = self._description(port)
        if description:
            lines.append(f" description {description}")
        if not self._state(port)[0]:
            lines.append(" shutdown")
        return lines

    def _ios_show_run(self, only: Port | None = None) -> list[str]:
        if only:
            body = self._interface_config(only) + ["end"]
        else:
            body = ["!", "version 15.2", f"hostname {self.hostname}", "!"]
            for port in self.ports.ports:
                body += self._interface_config(port) + ["!"]
            body += self._ios_span_config() + ["!", "end"]
        size = sum(len(line) + 1 for line in body)
        return ["Building configuration...", "", f"Current configuration : {size} bytes", "!"] + body + [""]

    def _ios_span_config(self) -> list[str]:
        lines = []
        with self.config.lock:
            for n, mirror in sorted(self.config.mirrors.items()):
                for name, direction in mirror.sources.items():
                    suffix = "" if direction == "both" else f" {direction}"
                    lines.append(
                        f"monitor session {n} source interface {self.ports.by_name(name).short}{suffix}"
                    )
                if mirror.destination:
                    short = self.ports.by_name(mirror.destination).short
                    lines.append(f"monitor session {n} destination interface {short}")
        return lines

    def _ios_show_monitor(self, only: int | None = None) -> list[str]:
        lines: list[str] = []
        labels = {"both": "Both", "rx": "RX Only", "tx": "TX Only"}
        with self.config.lock:
            sessions = sorted(self.config.mirrors.items())
        for n, mirror in sessions:
            if only is not None and n != only:
                continue
            lines += [f"Session {n}", "-" * (8 + len(str(n))), "Type                     : Local Session"]
            lines.append("Source Ports             :")
            for direction, label in labels.items():
                names = [self.ports.by_name(p).short for p, d in mirror.sources.items() if d == direction]
                if names:
                    lines.append(f"    {label:<21}: {','.join(names)}")
            if mirror.destination:
                lines.append(f"Destination Ports        : {self.ports.by_name(mirror.destination).short}")
                lines += ["    Encapsulation        : Native", "          Ingress        : Disabled"]
            lines.append("")
        if only is not None and not lines:
            return [f"% Session {only} does not exist"]
        return lines

    def _ios_span_source(self, n: int, port: Port, direction: str = "both") -> list[str]:
        def change(m: MirrorSession) -> None:
            m.sources[port.name] = direction

        self._mirror(n, change)
        return []

    def _ios_span_destination(self, n: int, port: Port) -> list[str]:
        with self.config.lock:
            mirror = self.config.mirrors.get(n)
            if mirror and port.name in mirror.sources:
                return [f"% Interface(s) {port.short} already configured as monitor sources for session {n}"]

        def change(m: MirrorSession) -> None:
            m.destination = port.name

        self._mirror(n, change)
        return []

    def _ios_span_remove_source(self, n: int, port: Port) -> list[str]:
        def change(m: MirrorSession) -> None:
            m.sources.pop(port.name, None)

        self._mirror(n, change)
        return []

    def _ios_span_remove_dest(self, n: int, port: Port) -> list[str]:
        def change(m: MirrorSession) -> None:
            if m.destination == port.name:
                m.destination = None

        self._mirror(n, change)
        return []

    def _span_delete(self, n: int) -> list[str]:
        self._mirror(n, None)
        return []

    def _ios_span_clear(self) -> list[str]:
        with self.config.lock:
            for n in list(self.config.mirrors):
                self._mirror(n, None)
        return []

    # -- Huawei VRP ----------------------------------------------------------------------------

    def _huawei_grammars(self) -> dict[str, Grammar]:
        def common(g: Grammar) -> Grammar:
            g.add("display version", self._vrp_display_version)
            g.add("display interface", self._vrp_display_interface)
            g.add("display interface <if>", self._vrp_display_interface)
            g.add("display interface brief", self._vrp_display_brief)
            g.add("display interface description", self._vrp_display_description)
            g.add("display current-configuration", self._vrp_display_config)
            g.add("display current-configuration interface <if>", self._vrp_display_config)
            g.add("display port-mirroring", self._vrp_display_mirroring)
            g.add("display observe-port", self._vrp_display_observe)
            g.add("save", self._vrp_save)
            return g

        user = common(Grammar(self.ports))
        user.add(
            "system-view",
            lambda: self._set_mode("system", ["Enter system view, return user view with Ctrl+Z."]),
        )
        user.add("quit", self._logout)
        user.add("screen-length <num> temporary", self._vrp_screen_length)
        user.add("undo screen-length temporary", lambda: self._vrp_screen_length(24))

        system = common(Grammar(self.ports))
        system.add("display this", self._vrp_display_config)
        system.add("interface <if>", lambda port: self._enter_interface(port, "interface"))
        system.add("observe-port <num> interface <if>", self._vrp_observe_port)
        system.add("undo observe-port <num>", self._vrp_undo_observe_port)
        system.add("quit", lambda: self._set_mode("user"))
        system.add("return", lambda: self._set_mode("user"))

        iface = common(Grammar(self.ports))
        iface.add("display this", lambda: self._vrp_display_config(self.interface))
        iface.add("shutdown", lambda: self._admin(False))
        iface.add("undo shutdown", lambda: self._admin(True))
        iface.add("description <rest>", self._set_description)
        iface.add("undo description", lambda: self._set_description(None))
        for direction in ("inbound", "outbound", "both"):
            iface.add(
                f"port-mirroring to observe-port <num> {direction}",
                lambda n, d=direction: self._vrp_port_mirroring(n, d, True),
            )
            iface.add(
                f"undo port-mirroring to observe-port <num> {direction}",
                lambda n, d=direction: self._vrp_port_mirroring(n, d, False),
            )
        iface.add("quit", lambda: self._set_mode("system"))
        iface.add("return", lambda: self._set_mode("user"))
        return {"user": user, "system": system, "interface": iface}

    def _vrp_screen_length(self, n: int) -> list[str]:
        self.page_length = n
        return ["Info: The configuration takes effect on the current user terminal interface only."]

    def _vrp_save(self) -> list[str]:
        def answer(reply: str) -> str:
            if reply.strip().lower() not in ("y", "yes"):
                return self.prompt()
            self._save()
            return (
                "Now saving the current configuration to the slot 0.\r\n"
                "Info: Save the configuration successfully.\r\n" + self.prompt()
            )

        self._ask(
            "Warning: The current configuration will be written to the device. Continue? [Y/N]:", answer
        )
        return []

    def _vrp_states(self, port: Port) -> tuple[str, str]:
        admin, link = self._state(port)
        if not admin:
            return "*down", "down"
        return ("up", "up") if link else ("down", "down")

    def _vrp_display_version(self) -> list[str]:
        f = self.facts
        weeks, days, hours, mins = _uptime_parts(time.time() - self.config.boot_time)
        uptime = f"{weeks} week, {days} day, {hours} hour, {mins} minutes"
        family = f["model"].split("-")[0]
        return [
            "Huawei Versatile Routing Platform Software",
            f"VRP (R) software, Version {f['vrp_version']} ({family} {f['version']})",
            "Copyright (C) 2000-2020 HUAWEI TECH CO., LTD",
            f"HUAWEI {f['model']} Routing Switch uptime is {uptime}",
            "",
            f"ES5D2T28S005 0(Master) : uptime is {uptime}",
            "DDR             Memory Size : 512     M bytes",
            "FLASH Total     Memory Size : 512     M bytes",
            "FLASH Available Memory Size : 300     M bytes",
            "Pcb           Version   : VER.B",
            "BootROM       Version   : 020a.0001",
            "BootLoad      Version   : 020a.0001",
            "CPLD          Version   : 0106",
            f"Software      Version   : VRP (R) Software, Version {f['vrp_version']} ({f['version']})",
            "FLASH         Version   : 0000.0000",
            f"Serial Number           : {f['serial']}",
        ]

    def _vrp_display_brief(self) -> list[str]:
        lines = [
            "PHY: Physical",
            "*down: administratively down",
            "^down: standby",
            "(l): loopback",
            "(s): spoofing",
            "(b): BFD down",
            "(e): ETHOAM down",
            "(dl): DLDP down",
            "(d): Dampening Suppressed",
            "InUti/OutUti: input utility/output utility",
            "Interface                   PHY   Protocol  InUti OutUti   inErrors  outErrors",
        ]
        for port in self.ports.ports:
            phy, proto = self._vrp_states(port)
            lines.append(f"{port.full:<27} {phy:<5} {proto:<8} {'0%':>6} {'0%':>6} {0:>10} {0:>10}")
        lines.append(f"{'NULL0':<27} {'up':<5} {'up(s)':<8} {'0%':>6} {'0%':>6} {0:>10} {0:>10}")
        return lines

    def _vrp_display_description(self) -> list[str]:
        lines = [
            "PHY: Physical",
            "*down: administratively down",
            "(l): loopback",
            "(s): spoofing",
            "(b): BFD down",
            "(e): ETHOAM down",
            "(d): Dampening Suppressed",
            "Interface                     PHY     Protocol Description",
        ]
        for port in self.ports.ports:
            phy, proto = self._vrp_states(port)
            lines.append(f"{port.short:<29} {phy:<7} {proto:<8} {self._description(port)}".rstrip())
        return lines

    def _vrp_display_interface(self, only: Port | None = None) -> list[str]:
        lines: list[str] = []
        for port in [only] if only else self.ports.ports:
            admin, link = self._state(port)
            phy = "Administratively DOWN" if not admin else ("UP" if link else "DOWN")
            mac = _mac(self.facts["base_mac"], port.index, "-")
            lines += [
                f"{port.full} current state : {phy}",
                f"Line protocol current state : {'UP' if link else 'DOWN'}",
                f"Description:{self._description(port)}",
                "Switch Port, PVID :    1, TPID : 8100(Hex), The Maximum Frame Length is 9216",
                f"IP Sending Frames' Format is PKTFMT_ETHNT_2, Hardware address is {mac}",
                "Port Mode: COMMON COPPER",
                "Speed : 1000,  Loopback: NONE",
                "Duplex: FULL,  Negotiation: ENABLE",
                "Mdi   : AUTO",
                "Last 300 seconds input rate 0 bits/sec, 0 packets/sec",
                "Last 300 seconds output rate 0 bits/sec, 0 packets/sec",
                "Input:  0 packets, 0 bytes",
                "Output:  0 packets, 0 bytes",
                "    Input bandwidth utilization  :    0%",
                "    Output bandwidth utilization :    0%",
                "",
            ]
        return lines

    def _vrp_interface_config(self, port: Port) -> list[str]:
        lines = self._interface_config(port)
        with self.config.lock:
            for n, mirror in sorted(self.config.mirrors.items()):
                direction = mirror.sources.get(port.name)
                if direction:
                    word = {"rx": "inbound", "tx": "outbound"}.get(direction, "both")
                    lines.append(f" port-mirroring to observe-port {n} {word}")
        return lines

    def _vrp_display_config(self, only: Port | None = None) -> list[str]:
        if only:
            return ["#"] + self._vrp_interface_config(only) + ["#", "return"]
        lines = ["!Software Version " + self.facts["version"], "#", f"sysname {self.hostname}", "#"]
        with self.config.lock:
            for n, mirror in sorted(self.config.mirrors.items()):
                if mirror.destination:
                    full = self.ports.by_name(mirror.destination).full
                    lines.append(f"observe-port {n} interface {full}")
        lines.append("#")
        for port in self.ports.ports:
            lines += self._vrp_interface_config(port) + ["#"]
        return lines + ["return"]

    def _vrp_display_observe(self) -> list[str]:
        rule = "  " + "-" * 70
        lines = [rule]
        with self.config.lock:
            for n, mirror in sorted(self.config.mirrors.items()):
                if mirror.destination:
                    full = self.ports.by_name(mirror.destination).full
                    lines += [
                        f"  Index        : {n}",
                        "  Untag-packet : No",
                        f"  Interface    : {full}",
                        rule,
                    ]
        return lines

    def _vrp_display_mirroring(self) -> list[str]:
        rule = "  " + "-" * 70
        words = {"rx": "Inbound", "tx": "Outbound", "both": "Both"}
        lines = [rule]
        with self.config.lock:
            sessions = sorted(self.config.mirrors.items())
        for n, mirror in sessions:
            dest = self.ports.by_name(mirror.destination).full if mirror.destination else "-"
            lines += [f"  Observe-port {n} : {dest}", rule, "  Port-mirror:", rule]
            lines += ["       Mirror-port               Direction  Observe-port", rule]
            for i, (name, direction) in enumerate(mirror.sources.items(), start=1):
                full = self.ports.by_name(name).full
                lines.append(f"  {i:<4} {full:<25} {words[direction]:<10} Observe-port {n}")
            lines.append(rule)
        return lines if sessions else ["Info: The port-mirroring is not configured."]

    def _vrp_observe_port(self, n: int, port: Port) -> list[str]:
        def change(m: MirrorSession) -> None:
            m.destination = port.name

        self._mirror(n, change)
        return []

    def _vrp_undo_observe_port(self, n: int) -> list[str]:
        with self.config.lock:
            mirror = self.config.mirrors.get(n)
            if mirror and mirror.sources:
                return ["Error: The observe port is in use."]

        def change(m: MirrorSession) -> None:
            m.destination = None

        self._mirror(n, change)
        return []

    def _vrp_port_mirroring(self, n: int, direction: str, add: bool) -> list[str]:
        assert self.interface is not None
        port = self.interface
        key = {"inbound": "rx", "outbound": "tx"}.get(direction, "both")
        with self.config.lock:
            mirror = self.config.mirrors.get(n)
            if add and (mirror is None or mirror.destination is None):
                return ["Error: The observe port does not exist."]
            if not add and (mirror is None or port.name not in mirror.sources):
                return ["Error: The port-mirroring is not configured."]

        def change(m: MirrorSession) -> None:
            if add:
                m.sources[port.name] = key
            else:
                m.sources.pop(port.name, None)

        self._mirror(n, change)
        return []


def _walk(node: _Node, prefix: str = "") -> list[tuple[str, Callable[..., list[str]]]]:
    """All (spec, handler) pairs below a node, to build one mode's grammar from another's."""
    found = []
    if node.handler is not None:
        found.append((prefix.strip(), node.handler))
    for word, child in node.words.items():
        found += _walk(child, f"{prefix} {word}")
    for kind, child in node.params:
        found += _walk(child, f"{prefix} {kind}")
    return found


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
