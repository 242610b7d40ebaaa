"""The Huawei VRP dialect of the emulated switch: user, system and interface views, the commands
netmiko's ``huawei`` driver and a person at the console use, with VRP's own texts.
"""

from __future__ import annotations

import time
from typing import ClassVar

from virtual.switch_cli.grammar import Grammar, Parsed
from virtual.switch_cli.ports import MirrorSession, Port
from virtual.switch_cli.session import SwitchCLI, mac_address, uptime_parts

_ERRORS = {
    "invalid": "Error: Unrecognized command found at '^' position.",
    "wrong": "Error: Wrong parameter found at '^' position.",
    "incomplete": "Error: Incomplete command found at '^' position.",
    "ambiguous": "Error: Ambiguous command found at '^' position.",
}


class HuaweiVRP(SwitchCLI):
    """A session in VRP's words; views user (``<h>``), system (``[h]``) and interface (``[h-GE0/0/1]``)."""

    VENDOR = "huawei"
    FACTS: ClassVar[dict[str, str]] = {
        "model": "S5720-28X-SI-AC",
        "vrp_version": "5.170",
        "version": "V200R019C10SPC500",
        "serial": "2102351931DMK8000123",
        "base_mac": "52:54:00:12:34:00",
    }
    INITIAL_MODE = "user"
    MORE = "  ---- More ----"
    PARENT_MODES: ClassVar[dict[str, str]] = {"interface": "system"}
    EXEC_ANSWER = "y"  # VRP asks [Y/N] with no default

    def prompt(self) -> str:
        h = self.hostname
        if self.mode == "user":
            return f"<{h}>"
        if self.mode == "system":
            return f"[{h}]"
        assert self.interface is not None
        return f"[{h}-{self.interface.full}]"

    def greeting(self) -> str:
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        return (
            "\r\nInfo: The max number of VTY users is 10, and the number\r\n"
            "      of current VTY users on line is 1.\r\n"
            f"      The current login time is {now}.\r\n" + self.prompt()
        )

    def _erase_more(self) -> str:
        n = len(self.MORE)
        return f"\x1b[{n}D" + " " * n + f"\x1b[{n}D"

    def _interrupted(self, key: str) -> str:
        if key == "\x1a" and self.mode != "user":
            self.mode, self.interface = "user", None
        return "\r\n" + self.prompt()

    def _error(self, parsed: Parsed, line: str, column: int) -> list[str]:
        return [" " * (column + parsed.pos) + "^", _ERRORS[parsed.error]]

    def _backend_error(self, exc: Exception) -> list[str]:
        return [f"Error: {exc}"]

    def _build_grammars(self) -> dict[str, Grammar]:
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
        weeks, days, hours, mins = uptime_parts(time.time() - self.config.boot_time)
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
            mac = mac_address(self.facts["base_mac"], port.index, "-")
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
