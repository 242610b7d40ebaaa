"""Emulated Linux lab host endpoint (PBX/CTI/UL hosts), served over SSH exec and shell.

Why: the product's host driver controls services on real hosts with systemctl/journalctl over SSH.
In the virtual lab those commands must reach the processes the keeper started, with systemd's
output and exit codes, so the same driver code works on both. Only the commands the driver needs
exist; everything else answers "command not found" rather than pretending.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from virtual.services import Service, ServiceError, ServiceStatus, ServiceSupervisor, process_state, unit_name
from virtual.terminal import LineSessionBase

__all__ = [
    "HostCLI",
    "HostShell",
    "Service",
    "ServiceError",
    "ServiceStatus",
    "ServiceSupervisor",
    "host_session_factory",
    "parse_signal",
]

Result = tuple[int, str, str]
_NET_TOOLS = ("nft", "iptables", "tc")
# Options that would read files of the keeper (nft -f, includes, tc -batch): refused.
_NET_TOOL_REFUSED = {"nft": ("-f", "-I", "--includepath"), "tc": ("-b", "-batch")}
_NET_TOOL_TIMEOUT = 15.0
_SHOW_PROPERTIES = (
    "Id",
    "Names",
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "ExecMainStatus",
)


def parse_signal(text: str) -> int:
    """'SIGKILL', 'KILL', 'kill' or '9' -> 9."""
    text = text.strip().upper()
    if text.isdigit():
        return signal.Signals(int(text)).value
    return signal.Signals[text if text.startswith("SIG") else "SIG" + text].value


def _ago(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}min"
    if minutes:
        return f"{minutes}min {secs}s"
    return f"{secs}s"


def _tail(path: Path, lines: int | None) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    rows = text.splitlines()
    if lines is not None:
        rows = rows[-lines:] if lines > 0 else []
    return "".join(row + "\n" for row in rows)


class HostCLI(LineSessionBase):
    """A login on one lab host: ``run()`` for SSH exec, ``feed()`` for an interactive shell."""

    def __init__(
        self,
        hostname: str,
        supervisor: ServiceSupervisor,
        *,
        files: Iterable[str | os.PathLike[str]] = (),
        username: str = "root",
        netns_argv: list[str] | None = None,
    ) -> None:
        self.hostname = hostname
        self.netns_argv = list(netns_argv) if netns_argv is not None else None
        self.supervisor = supervisor
        self.username = username or "root"
        self._files = [Path(f) for f in files]
        self._commands: dict[str, Callable[[list[str]], Result]] = {
            "systemctl": self._systemctl,
            "journalctl": self._journalctl,
            "cat": self._cat,
            "tail": self._tail,
            "ps": self._ps,
            "hostname": lambda args: (0, self.hostname + "\n", ""),
            "uname": self._uname,
            "echo": self._echo,
            "true": lambda args: (0, "", ""),
            "false": lambda args: (1, "", ""),
            "whoami": lambda args: (0, self.username + "\n", ""),
            "sleep": self._sleep,
        }
        if self.netns_argv is not None:
            # Packet filters and qdiscs are real: the binaries run inside this host's own network
            # namespace, so a fault injected over SSH acts on the host's real traffic, as on hardware.
            for tool in _NET_TOOLS:
                self._commands[tool] = lambda args, tool=tool: self._net_tool(tool, args)

    # -- shell ---------------------------------------------------------------------------------

    def prompt(self) -> str:
        return f"{self.username}@{self.hostname}:~{'#' if self.username == 'root' else '$'} "

    def greeting(self) -> str:
        u = os.uname()
        return f"Linux {self.hostname} {u.release} {u.version} {u.machine}\r\n\r\n" + self.prompt()

    def feed(self, line: str) -> str:
        if line.strip() in ("exit", "logout"):
            self.closed = True
            return "logout\r\n"
        code, out, err = self.run(line) if line.strip() else (0, "", "")
        text = (out + err).replace("\r\n", "\n").replace("\n", "\r\n")
        return text + self.prompt()

    # -- exec ----------------------------------------------------------------------------------

    def run(self, command: str) -> Result:
        """Run a command line: simple commands joined by ';', '&&' or '||' (no pipes/redirects)."""
        try:
            lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>")
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError as exc:
            return 2, "", f"bash: syntax error: {exc}\n"
        code, out, err = 0, [], []
        words: list[str] = []
        run_next = True
        for tok in [*tokens, ";"]:
            if tok in (";", "&&", "||"):
                if words and run_next:
                    code, o, e = self._simple(words)
                    out.append(o)
                    err.append(e)
                words = []
                run_next = tok == ";" or (tok == "&&") == (code == 0)
            elif tok and set(tok) <= set(";&|<>"):
                return 2, "".join(out), "".join(err) + f"bash: '{tok}' is not supported on this lab host\n"
            else:
                words.append(tok)
        return code, "".join(out), "".join(err)

    def _simple(self, words: list[str]) -> Result:
        while words and words[0] == "sudo":
            words = [w for w in words[1:] if w not in ("-n", "-S", "--non-interactive")]
        if not words:
            return 0, "", ""
        handler = self._commands.get(words[0])
        if handler is None:
            return 127, "", f"bash: {words[0]}: command not found\n"
        try:
            return handler(words[1:])
        except (ValueError, KeyError, IndexError) as exc:
            return 2, "", f"{words[0]}: invalid arguments: {exc}\n"

    # -- commands ------------------------------------------------------------------------------

    def _uname(self, args: list[str]) -> Result:
        u = os.uname()
        fields = {"-s": u.sysname, "-n": self.hostname, "-r": u.release, "-v": u.version, "-m": u.machine}
        if "-a" in args:
            parts = [u.sysname, self.hostname, u.release, u.version, u.machine, "GNU/Linux"]
        else:
            parts = [fields[a] for a in args if a in fields] or [u.sysname]
        return 0, " ".join(parts) + "\n", ""

    def _echo(self, args: list[str]) -> Result:
        newline = "\n"
        if args and args[0] == "-n":
            args, newline = args[1:], ""
        return 0, " ".join(args) + newline, ""

    def _net_tool(self, tool: str, args: list[str]) -> Result:
        """nft / iptables / tc, for real, in this host's network namespace (never the keeper's)."""
        bad = [a for a in args if a in _NET_TOOL_REFUSED.get(tool, ()) or a.startswith("--file")]
        if bad:
            return 2, "", f"{tool}: option {bad[0]} is not supported on this lab host\n"
        binary = shutil.which(tool) or f"/usr/sbin/{tool}"
        try:
            r = subprocess.run(
                [*(self.netns_argv or []), binary, *args],
                capture_output=True,
                text=True,
                timeout=_NET_TOOL_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return 1, "", f"{tool}: {exc}\n"
        return r.returncode, r.stdout, r.stderr

    def _sleep(self, args: list[str]) -> Result:
        time.sleep(min(float(args[0]), 60.0))
        return 0, "", ""

    def _readable(self, path: str) -> Path | None:
        """Only this host's log files and declared files can be read, nothing else on the keeper."""
        try:
            wanted = Path(path).resolve()
        except OSError:
            return None
        allowed = {p.resolve() for p in [*self.supervisor.log_paths(), *self._files]}
        return wanted if wanted in allowed and wanted.is_file() else None

    def _cat(self, args: list[str]) -> Result:
        out, err, code = [], [], 0
        for path in args:
            found = self._readable(path)
            if found is None:
                code = 1
                err.append(f"cat: {path}: No such file or directory\n")
            else:
                out.append(_tail(found, None))
        return code, "".join(out), "".join(err)

    def _tail(self, args: list[str]) -> Result:
        lines, paths, i = 10, [], 0
        while i < len(args):
            arg = args[i]
            if arg == "-n":
                lines, i = int(args[i + 1]), i + 2
                continue
            if arg.startswith("-n"):
                lines = int(arg[2:])
            elif arg.startswith("-") and arg[1:].isdigit():
                lines = int(arg[1:])
            else:
                paths.append(arg)
            i += 1
        out, err, code = [], [], 0
        for path in paths:
            found = self._readable(path)
            if found is None:
                code = 1
                err.append(f"tail: cannot open '{path}' for reading: No such file or directory\n")
            else:
                out.append(_tail(found, lines))
        return code, "".join(out), "".join(err)

    def _ps(self, args: list[str]) -> Result:
        """``ps -o stat= -p PID`` and friends, for this host's service processes only."""
        pids: list[int] = []
        fields = ["pid", "stat", "args"]
        header = True
        i = 0
        while i < len(args):
            if args[i] in ("-p", "--pid"):
                pids += [int(p) for p in args[i + 1].split(",")]
                i += 2
            elif args[i] in ("-o", "--format"):
                spec = args[i + 1]
                header = not spec.endswith("=")
                fields = [f.rstrip("=") for f in spec.split(",")]
                i += 2
            else:
                raise ValueError(f"unsupported option {args[i]}")
        ours = {self.supervisor.main_pid(n): n for n in self.supervisor.names()}
        rows = []
        for pid in pids or [p for p in ours if p]:
            state = process_state(pid) if pid in ours and pid else ""
            if not state:
                continue
            values = {
                "pid": str(pid),
                "stat": state,
                "comm": Path(self.supervisor.service(ours[pid]).argv[0]).name,
                "args": " ".join(self.supervisor.service(ours[pid]).argv),
            }
            rows.append(" ".join(values[f] for f in fields))
        text = (" ".join(f.upper() for f in fields) + "\n" if header else "") + "".join(
            r + "\n" for r in rows
        )
        return (0 if rows else 1), text, ""

    def _journalctl(self, args: list[str]) -> Result:
        units: list[str] = []
        lines: int | None = None
        i = 0
        while i < len(args):
            arg = args[i]
            if arg in ("-u", "--unit"):
                units.append(unit_name(args[i + 1]))
                i += 2
                continue
            if arg.startswith("--unit="):
                units.append(unit_name(arg.split("=", 1)[1]))
            elif arg in ("-n", "--lines"):
                lines, i = int(args[i + 1]), i + 2
                continue
            elif arg.startswith("--lines="):
                lines = int(arg.split("=", 1)[1])
            elif arg.startswith("-n") and arg[2:].isdigit():
                lines = int(arg[2:])
            elif arg in ("-o", "--output"):
                i += 2
                continue
            elif arg in (
                "--no-pager",
                "-q",
                "--quiet",
                "-e",
                "--pager-end",
                "-x",
                "--catalog",
                "--no-hostname",
            ):
                pass
            elif not arg.startswith("--output="):
                return 1, "", f"journalctl: option '{arg}' is not supported on this lab host\n"
            i += 1
        text = "".join(
            _tail(Path(self.supervisor.service(u).log_path), lines) for u in units if self.supervisor.has(u)
        )
        return 0, text or "-- No entries --\n", ""

    # -- systemctl -----------------------------------------------------------------------------

    def _systemctl(self, args: list[str]) -> Result:
        sig, props, value, quiet = signal.SIGTERM, [], False, False
        words: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg in ("-s", "--signal"):
                sig, i = parse_signal(args[i + 1]), i + 2
                continue
            if arg.startswith("--signal="):
                sig = parse_signal(arg.split("=", 1)[1])
            elif arg in ("-p", "--property"):
                props += args[i + 1].split(",")
                i += 2
                continue
            elif arg.startswith("--property="):
                props += arg.split("=", 1)[1].split(",")
            elif arg == "--value":
                value = True
            elif arg in ("-q", "--quiet"):
                quiet = True
            elif arg.startswith("-"):
                pass  # --no-pager, --no-block, --full, --kill-whom=main...: no effect here
            else:
                words.append(arg)
            i += 1
        if not words:
            return 1, "", "systemctl: this lab host needs a verb (start, stop, status, ...)\n"
        verb, units = words[0], [unit_name(u) for u in words[1:]]
        if verb == "daemon-reload":
            return 0, "", ""
        if not units:
            return 1, "", "Too few arguments.\n"
        if verb in ("start", "stop", "restart", "kill", "reset-failed"):
            return self._control(verb, units, sig)
        if verb in ("is-active", "is-failed"):
            return self._is(verb, units, quiet)
        if verb == "status":
            return self._status(units)
        if verb == "show":
            return self._show(units, props, value)
        return 1, "", f'Unknown command verb "{verb}" on this lab host.\n'

    def _control(self, verb: str, units: list[str], sig: int) -> Result:
        sup, err = self.supervisor, []
        for unit in units:
            if not sup.has(unit):
                word = "not found" if verb in ("start", "restart") else "not loaded"
                action = {"kill": "kill unit"}.get(verb, verb)
                err.append(f"Failed to {action} {unit}.service: Unit {unit}.service {word}.\n")
                return 5, "", "".join(err)
            try:
                if verb == "start":
                    sup.start(unit)
                elif verb == "stop":
                    sup.stop(unit)
                elif verb == "restart":
                    sup.restart(unit)
                elif verb == "reset-failed":
                    sup.reset_failed(unit)
                else:
                    sup.kill(unit, sig)
            except ServiceError as exc:
                return 1, "", f"{exc}\n"
        return 0, "", ""

    def _is(self, verb: str, units: list[str], quiet: bool) -> Result:
        states = [
            self.supervisor.status(u).active_state if self.supervisor.has(u) else "inactive" for u in units
        ]
        want = "active" if verb == "is-active" else "failed"
        code = 0 if want in states else (3 if verb == "is-active" else 1)
        return code, "" if quiet else "".join(s + "\n" for s in states), ""

    def _status(self, units: list[str]) -> Result:
        blocks, code = [], 0
        for unit in units:
            if not self.supervisor.has(unit):
                return 4, "".join(blocks), f"Unit {unit}.service could not be found.\n"
            st = self.supervisor.status(unit)
            svc = self.supervisor.service(unit)
            mark = {"active": "●", "paused": "●", "activating": "●", "deactivating": "●", "failed": "×"}
            since = time.strftime("%a %Y-%m-%d %H:%M:%S %Z", time.localtime(st.since))
            detail = {
                "active": "active (running)",
                "paused": "active (running)",
                "activating": "activating (start)",
                "deactivating": "deactivating (stop-sigterm)",
                "inactive": "inactive (dead)",
                "failed": f"failed (Result: {st.result})",
            }[st.state]
            lines = [
                f"{mark.get(st.state, '○')} {unit}.service - {svc.description or unit}",
                f"     Loaded: loaded (/etc/systemd/system/{unit}.service; enabled; preset: enabled)",
                f"     Active: {detail} since {since}; {_ago(time.time() - st.since)} ago",
            ]
            if st.pid:
                lines += [
                    f"   Main PID: {st.pid} ({Path(svc.argv[0]).name})",
                    f"     CGroup: /system.slice/{unit}.service",
                    f"             └─{st.pid} {' '.join(svc.argv)}",
                ]
            else:
                code = 3
                last = self.supervisor.last_pid(unit)
                if last:
                    how = (
                        f"code=killed, signal={signal.Signals(st.exit_signal).name[3:]}"
                        if st.exit_signal
                        else f"code=exited, status={st.exit_code or 0}"
                    )
                    lines.append(f"   Main PID: {last} ({how})")
            log = _tail(Path(svc.log_path), 10)
            blocks.append("\n".join(lines) + "\n" + ("\n" + log if log else ""))
        return code, "\n".join(blocks), ""

    def _show(self, units: list[str], props: list[str], value: bool) -> Result:
        out = []
        for unit in units:
            if self.supervisor.has(unit):
                st = self.supervisor.status(unit)
                values = {
                    "Id": f"{unit}.service",
                    "Names": f"{unit}.service",
                    "LoadState": "loaded",
                    "ActiveState": st.active_state,
                    "SubState": st.sub_state,
                    "Result": st.result,
                    "MainPID": str(st.pid),
                    "ExecMainPID": str(st.pid or self.supervisor.last_pid(unit)),
                    "ExecMainStatus": str(
                        st.exit_code if st.exit_code is not None else (st.exit_signal or 0)
                    ),
                }
            else:
                values = {"Id": f"{unit}.service", "Names": f"{unit}.service", "LoadState": "not-found"}
                values |= {"ActiveState": "inactive", "SubState": "dead", "Result": "success", "MainPID": "0"}
                values |= {"ExecMainPID": "0", "ExecMainStatus": "0"}
            for prop in props or list(_SHOW_PROPERTIES):
                shown = values.get(prop, "")
                out.append(shown if value else f"{prop}={shown}")
        return 0, "".join(line + "\n" for line in out), ""


HostShell = HostCLI  # the name the keeper uses


def host_session_factory(
    hostname: str,
    supervisor: ServiceSupervisor,
    files: Iterable[str | os.PathLike[str]] = (),
    netns_argv: list[str] | None = None,
) -> Callable[[str], HostCLI]:
    """A session_factory for SSHServer: one HostCLI per SSH session, all on one supervisor.

    ``netns_argv`` (e.g. ``nsenter --net=/run/netns/sha-pbx1 --``) enables nft, iptables and tc, run in
    that namespace; without it those commands are "not found" rather than acting on the keeper.
    """
    paths = list(files)

    def factory(username: str = "root") -> HostCLI:
        return HostCLI(hostname, supervisor, files=paths, username=username, netns_argv=netns_argv)

    return factory
