"""A small paramiko SSH server for the emulated switches and lab hosts.

Why: the product's real drivers (netmiko over an interactive shell, paramiko ``exec_command``, SFTP)
must log in to something that speaks real SSH. The keeper creates the listening socket inside the
device's network namespace and hands it over; this module never binds. Each connection runs in its
own threads, so a client that stalls or vanishes disturbs nobody else. A caller host adds what a
physical lab's caller host offers the harness (``CallerHost``): its test caller program, run in the
host's namespace with the password on stdin, ``kill`` of the callers it started, and SFTP to fetch
their result files (``sftp_root``: the host's own filesystem).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import select
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from paramiko.common import cMSG_CHANNEL_FAILURE, cMSG_CHANNEL_SUCCESS

from virtual.terminal import ExecSession, LineSession, Terminal
from virtual.wakeup import Waker

log = logging.getLogger(__name__)
_transport_log = logging.getLogger(f"{__name__}.transport")


class _ClientGoneFilter(logging.Filter):
    """paramiko logs a client's abrupt disconnect or protocol garbage as ERROR with a traceback.

    For an emulated device that is routine client behaviour, so server transports log at DEBUG.
    Our own session errors are logged by ``log``, not here.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return _transport_log.isEnabledFor(logging.DEBUG)


_transport_log.addFilter(_ClientGoneFilter())

SessionFactory = Callable[[str], Any]
_QUIET = (OSError, EOFError, paramiko.SSHException)


def load_or_create_host_key(path: str | os.PathLike[str]) -> paramiko.PKey:
    """Load an SSH host key, or create an Ed25519 one (instant, accepted by paramiko and OpenSSH)."""
    target = Path(path)
    if not target.exists():
        pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(tmp, target)  # atomic: concurrent keepers never read a half-written key
    return paramiko.PKey.from_path(target)


class _Transport(paramiko.Transport):
    """Counts channel-request replies, so a worker never closes a channel before its reply left.

    paramiko sends the reply to an ``exec``/``shell`` request only after our handler returns; a fast
    command could otherwise close the channel first and the client would fail with "Channel closed".
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._replies: dict[int, int] = {}
        self._replies_cv = threading.Condition()

    def replies(self, remote_chanid: int) -> int:
        with self._replies_cv:
            return self._replies.get(remote_chanid, 0)

    def wait_replies(self, remote_chanid: int, count: int, timeout: float = 2.0) -> None:
        with self._replies_cv:
            self._replies_cv.wait_for(lambda: self._replies.get(remote_chanid, 0) >= count, timeout)

    def _send_user_message(self, data: Any) -> None:
        super()._send_user_message(data)
        raw = data.asbytes() if isinstance(data, paramiko.Message) else bytes(data)
        if raw[:1] in (cMSG_CHANNEL_SUCCESS, cMSG_CHANNEL_FAILURE) and len(raw) >= 5:
            (chanid,) = struct.unpack(">I", raw[1:5])
            with self._replies_cv:
                self._replies[chanid] = self._replies.get(chanid, 0) + 1
                self._replies_cv.notify_all()


class _Interface(paramiko.ServerInterface):
    """Password (and keyboard-interactive) auth; session channels with pty, shell and exec."""

    def __init__(self, server: SSHServer, transport: _Transport) -> None:
        self._server = server
        self._transport = transport
        self._pending_user = ""
        self.username = ""
        self.authenticated = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return "password,keyboard-interactive"

    def check_auth_password(self, username: str, password: str) -> int:
        if self._server.check_password(username, password):
            self.username = username
            self.authenticated.set()
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_auth_interactive(self, username: str, submethods: str) -> paramiko.InteractiveQuery:
        self._pending_user = username
        return paramiko.InteractiveQuery("", "", ("Password: ", False))

    def check_auth_interactive_response(self, responses: list[str]) -> int:
        if len(responses) == 1 and self._server.check_password(self._pending_user, responses[0]):
            self.username = self._pending_user
            self.authenticated.set()
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(self, channel: paramiko.Channel, *args: Any) -> bool:
        return True

    def check_channel_window_change_request(self, channel: paramiko.Channel, *args: Any) -> bool:
        return True

    def check_channel_env_request(self, channel: paramiko.Channel, name: bytes, value: bytes) -> bool:
        return True

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        self._spawn(self._server.serve_shell, channel)
        return True

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self._spawn(self._server.serve_exec, channel, command.decode(errors="replace"))
        return True

    def _spawn(self, target: Callable[..., None], channel: paramiko.Channel, *args: Any) -> None:
        # Our reply is the next one on this channel; the worker waits for it before closing.
        reply = self._transport.replies(channel.remote_chanid) + 1
        threading.Thread(
            target=target,
            args=(channel, self.username, self._transport, reply, *args),
            name=f"ssh-{self._server.name}-{channel.get_id()}",
            daemon=True,
        ).start()


class SSHServer:
    """Serve a session factory over SSH on a listening socket the caller made (the server owns it now).

    ``session_factory(username)`` returns an object with the LineSession methods for interactive
    shells (netmiko) and/or ``run(command) -> (exit_code, stdout, stderr)`` for exec requests.
    ``close()`` also closes ``listen_sock``.
    """

    def __init__(
        self,
        listen_sock: socket.socket,
        host_key: paramiko.PKey,
        users: dict[str, str],
        session_factory: SessionFactory,
        *,
        name: str = "ssh",
        login_grace: float = 30.0,
        sftp_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.listen_sock = listen_sock
        self.sftp_root = Path(sftp_root) if sftp_root is not None else None
        self.login_grace = login_grace
        self.host_key = host_key
        self.users = dict(users)
        self.session_factory = session_factory
        self.name = name
        self._waker = Waker()
        self._thread: threading.Thread | None = None
        self._transports: set[paramiko.Transport] = set()
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        return self.listen_sock.getsockname()[:2]

    def __enter__(self) -> SSHServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_password(self, username: str, password: str) -> bool:
        expected = self.users.get(username)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    def start(self) -> None:
        """Accept connections in a daemon thread."""
        if self._thread is not None:
            return
        self.listen_sock.setblocking(False)  # select() said ready, but a reset peer must not block accept()
        self._thread = threading.Thread(target=self._accept_loop, name=f"ssh-{self.name}-accept", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting, drop every connection, close the listening socket. Idempotent."""
        if not self._waker.stop(self._thread):
            return
        with self._lock:
            transports, self._transports = list(self._transports), set()
        for transport in transports:
            transport.close()
        with contextlib.suppress(OSError):
            self.listen_sock.close()
        self._waker.close()

    def _accept_loop(self) -> None:
        while not self._waker.stopped:
            try:
                ready, _, _ = select.select([self.listen_sock, self._waker], [], [])
                if self._waker.stopped or self.listen_sock not in ready:
                    continue
                sock, peer = self.listen_sock.accept()
            except BlockingIOError:
                continue
            except OSError as exc:
                if self._waker.stopped:
                    return
                log.warning("%s: accept failed: %s", self.name, exc)
                time.sleep(0.1)  # EMFILE and friends: do not spin
                continue
            sock.setblocking(True)
            with contextlib.suppress(OSError):  # a CLI answers in small writes: do not let Nagle sit on them
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(
                target=self._handshake, args=(sock, peer), name=f"ssh-{self.name}-conn", daemon=True
            ).start()

    def _handshake(self, sock: socket.socket, peer: Any) -> None:
        transport: _Transport | None = None
        try:
            transport = _Transport(sock)
            transport.name = f"ssh-{self.name}-transport"
            transport.set_log_channel(_transport_log.name)
            transport.add_server_key(self.host_key)
            if self.sftp_root is not None:
                transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _RootedSFTP, root=self.sftp_root)
            with self._lock:
                if self._waker.stopped:
                    raise EOFError("server closing")
                self._transports = {t for t in self._transports if t.is_active()}
                self._transports.add(transport)
            iface = _Interface(self, transport)
            transport.start_server(server=iface)
            # Like sshd's LoginGraceTime: a client that never authenticates does not keep a transport.
            if not iface.authenticated.wait(self.login_grace) and transport.is_active():
                log.debug("%s: %s did not authenticate in %.0f s", self.name, peer, self.login_grace)
                transport.close()
        except (*_QUIET, ValueError) as exc:
            log.debug("%s: handshake with %s failed: %s", self.name, peer, exc)
            if transport is not None:
                transport.close()
            else:
                sock.close()

    def serve_shell(self, chan: paramiko.Channel, username: str, transport: _Transport, reply: int) -> None:
        """Drive one interactive session (netmiko's invoke_shell) until logout or disconnect."""
        try:
            session = self.session_factory(username)
            if not isinstance(session, LineSession):
                chan.sendall(b"This device offers no interactive shell.\r\n")
                self._finish(chan, transport, reply, 1)
                return
            term = Terminal(session)
            chan.sendall(term.start())
            while not term.closed:
                data = chan.recv(4096)
                if not data:
                    break
                out = term.receive(data)
                if out:
                    chan.sendall(out)
            self._finish(chan, transport, reply, 0)
        except _QUIET as exc:
            log.debug("%s: shell for %s ended: %s", self.name, username, exc)
        except Exception:
            log.exception("%s: shell session for %s crashed", self.name, username)
        finally:
            with contextlib.suppress(*_QUIET):
                chan.close()

    def serve_exec(
        self, chan: paramiko.Channel, username: str, transport: _Transport, reply: int, command: str
    ) -> None:
        """Run one exec request (paramiko exec_command) and return its output and exit status."""
        try:
            session = self.session_factory(username)
            if callable(getattr(session, "streams", None)) and session.streams(command):  # a program whose
                code, out, err = session.stream(command, chan), "", ""  # output streams as it runs (tcpdump)
            elif isinstance(session, CallerHost) and session.reads_stdin(command):
                code, out, err = session.run_input(command, _read_to_eof(chan))
            elif isinstance(session, ExecSession):
                code, out, err = session.run(command)
            else:
                code, out, err = 127, "", "exec requests are not supported here\n"
            if out:
                chan.sendall(out.encode())
            if err:
                chan.sendall_stderr(err.encode())
            self._finish(chan, transport, reply, code)
        except _QUIET as exc:
            log.debug("%s: exec for %s ended: %s", self.name, username, exc)
        except Exception:
            log.exception("%s: exec %r for %s crashed", self.name, command, username)
            with contextlib.suppress(*_QUIET):
                self._finish(chan, transport, reply, 255)
        finally:
            with contextlib.suppress(*_QUIET):
                chan.close()

    @staticmethod
    def _finish(chan: paramiko.Channel, transport: _Transport, reply: int, code: int) -> None:
        transport.wait_replies(chan.remote_chanid, reply)
        chan.send_exit_status(code)
        chan.shutdown_write()


def _read_to_eof(chan: paramiko.Channel, limit: int = 65536, timeout: float = 10.0) -> bytes:
    """A command's stdin, up to the client's EOF (a password line: small, sent at once)."""
    chan.settimeout(timeout)
    data = b""
    with contextlib.suppress(socket.timeout):
        while len(data) < limit:
            chunk = chan.recv(4096)
            if not chunk:
                break
            data += chunk
    chan.settimeout(None)
    return data


class CallerHost:
    """A caller host's exec endpoint: its test caller program, `kill` of the callers it started, and the
    host's own CLI (``fallback``) for everything else (systemctl, cat, ...).

    ``program`` is the topology's ``caller_command`` (e.g. ``python3 -m harness.drivers.caller``): a
    command starting with it runs ``python -m harness.drivers.caller`` with the rest of its arguments,
    inside the host's namespace (``netns_argv``); its absolute file arguments (``--out``, ``--pid-file``)
    are paths of the host's filesystem, ``root`` here, where SFTP finds them.
    """

    _PATH_OPTIONS = ("--out", "--pid-file")

    def __init__(
        self, fallback: Any, program: str, root: Path, netns_argv: list[str],
        started: dict[int, subprocess.Popen[bytes]], timeout: float = 120.0,
        program_argv: list[str] | None = None,
    ) -> None:  # fmt: skip
        self.program_argv = program_argv or [sys.executable, "-m", "harness.drivers.caller"]
        self.fallback, self.program, self.root = fallback, shlex.split(program), Path(root)
        self.netns_argv, self.timeout = list(netns_argv), timeout
        self._started = started  # the host's callers, shared by its sessions: a stop comes on another

    def reads_stdin(self, command: str) -> bool:
        return self._caller_args(command) is not None

    def _caller_args(self, command: str) -> list[str] | None:
        try:
            words = shlex.split(command)
        except ValueError:
            return None
        n = len(self.program)
        return words[n:] if words[:n] == self.program else None

    def host_path(self, path: str) -> Path:
        """A path of the emulated host, under ``root`` (never outside it)."""
        target = (self.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.root.resolve()):
            raise ValueError(f"{path}: outside the host's filesystem")
        return target

    def run_input(self, command: str, stdin: bytes) -> tuple[int, str, str]:
        args = self._caller_args(command) or []
        try:
            for i, word in enumerate(args[:-1]):
                if word in self._PATH_OPTIONS:
                    target = self.host_path(args[i + 1])
                    target.parent.mkdir(parents=True, exist_ok=True)
                    args[i + 1] = str(target)
        except ValueError as e:
            return 2, "", f"{e}\n"
        argv = [*self.netns_argv, *self.program_argv, *args]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._started[proc.pid] = proc
        try:
            out, err = proc.communicate(stdin, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        finally:
            self._started.pop(proc.pid, None)
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def run(self, command: str) -> tuple[int, str, str]:
        words = command.split()
        if len(words) == 2 and words[0] == "kill" and words[1].isdigit():
            proc = self._started.get(int(words[1]))
            if proc is None:
                return 1, "", f"kill: ({words[1]}) - No such process\n"
            proc.terminate()
            return 0, "", ""
        if self.reads_stdin(command):
            return self.run_input(command, b"")
        return self.fallback.run(command)

    def __getattr__(self, name: str) -> Any:  # the interactive shell and the rest: the host's own CLI
        return getattr(self.fallback, name)


def caller_host_factory(
    fallback: SessionFactory, program: str, root: Path, netns_argv: list[str],
    program_argv: list[str] | None = None,
) -> SessionFactory:  # fmt: skip
    """A session_factory for a caller host's SSHServer (give it ``sftp_root=root`` as well)."""

    started: dict[int, subprocess.Popen[bytes]] = {}

    def factory(username: str = "root") -> CallerHost:
        return CallerHost(fallback(username), program, root, netns_argv, started, program_argv=program_argv)

    return factory


class _RootedSFTP(paramiko.SFTPServerInterface):
    """SFTP over one directory, as a host's whole filesystem: enough to fetch and remove result files."""

    def __init__(self, server: Any, *args: Any, root: Path, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        self.root = Path(root).resolve()

    def _path(self, path: str) -> Path:
        target = (self.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.root):
            raise PermissionError(path)
        return target

    def _attrs(self, path: str) -> Any:
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(self._path(path)))
        except OSError as e:
            return paramiko.SFTPServer.convert_errno(e.errno or 13)

    def stat(self, path: str) -> Any:
        return self._attrs(path)

    def lstat(self, path: str) -> Any:
        return self._attrs(path)

    def open(self, path: str, flags: int, attr: Any) -> Any:
        if flags & (os.O_WRONLY | os.O_RDWR):
            return paramiko.SFTP_PERMISSION_DENIED  # the harness only fetches
        try:
            f = open(self._path(path), "rb")  # noqa: SIM115 - owned by the handle, closed by paramiko
        except OSError as e:
            return paramiko.SFTPServer.convert_errno(e.errno or 13)
        handle = paramiko.SFTPHandle(flags)
        handle.readfile = f
        handle.filename = str(path)
        return handle

    def remove(self, path: str) -> int:
        try:
            os.remove(self._path(path))
        except OSError as e:
            return paramiko.SFTPServer.convert_errno(e.errno or 13)
        return paramiko.SFTP_OK
