"""The Cisco IOS dialect of the emulated switch: exec, privileged, config and interface modes, the
commands netmiko's ``cisco_ios`` driver and a person at the console use, with IOS's own texts.
"""

from __future__ import annotations

import hmac
import time
from typing import ClassVar

from virtual.switch_cli.grammar import Grammar, Parsed
from virtual.switch_cli.ports import MirrorSession, Port
from virtual.switch_cli.session import SwitchCLI, mac_address, uptime_parts

_ERRORS = {
    "invalid": "% Invalid input detected at '^' marker.",
    "wrong": "% Invalid input detected at '^' marker.",
}


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


class CiscoIOS(SwitchCLI):
    """A session in IOS's words; modes exec (``>``), priv (``#``), config and config-if."""

    VENDOR = "cisco_ios"
    FACTS: ClassVar[dict[str, str]] = {
        "model": "WS-C2960X-48TS-L",
        "version": "15.2(7)E8",
        "image": "C2960X-UNIVERSALK9-M",
        "image_file": "flash:c2960x-universalk9-mz.152-7.E8.bin",
        "serial": "FOC2118X0AB",
        "base_mac": "52:54:00:12:34:00",
    }
    INITIAL_MODE = "exec"
    MORE = " --More-- "
    PARENT_MODES: ClassVar[dict[str, str]] = {"config-if": "config"}
    EXEC_ANSWER = ""  # IOS questions offer their default in brackets: Enter takes it

    def prompt(self) -> str:
        h = self.hostname
        return {
            "exec": f"{h}>",
            "priv": f"{h}#",
            "config": f"{h}(config)#",
            "config-if": f"{h}(config-if)#",
        }[self.mode]

    def _erase_more(self) -> str:
        return "\b" * len(self.MORE) + " " * len(self.MORE) + "\b" * len(self.MORE)

    def _interrupted(self, key: str) -> str:
        if self.mode in ("config", "config-if"):
            self.mode, self.interface = "priv", None
            return "^Z\r\n" + self.prompt()
        return "^C\r\n" + self.prompt()

    def _exec_mode(self) -> None:
        if self.mode == "exec":
            self.mode = "priv"

    def _error(self, parsed: Parsed, line: str, column: int) -> list[str]:
        if parsed.error == "incomplete":
            return ["% Incomplete command.", ""]
        if parsed.error == "ambiguous":
            return [f'% Ambiguous command:  "{line.strip()}"']
        return [" " * (column + parsed.pos) + "^", _ERRORS[parsed.error], ""]

    def _backend_error(self, exc: Exception) -> list[str]:
        return [f"% Error: {exc}", ""]

    def _terminal_length(self, n: int) -> list[str]:
        self.page_length = n
        return []

    def _build_grammars(self) -> dict[str, Grammar]:
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
        for spec, handler in user.specs():
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
        weeks, days, hours, mins = uptime_parts(time.time() - self.config.boot_time)
        parts = [_plural(n, u) for n, u in ((weeks, "week"), (days, "day"), (hours, "hour")) if n]
        uptime = ", ".join(parts + [_plural(mins, "minute")])
        model = f["model"]
        family = f.get("family") or (model.split("-")[1] if model.startswith("WS-") else model.split("-")[0])
        mac = mac_address(f["base_mac"], 0, "")
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
            mac = mac_address(self.facts["base_mac"], port.index, ".")
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
