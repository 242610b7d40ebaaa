"""An emulated serial console on a real pseudo-terminal.

Why: the product's console driver opens a serial port with pyserial. A pty gives it a real
``/dev/pts/N`` to open, with real termios, so the driver code runs unmodified. Like a console
server, the line stays up between clients: the CLI session (and its mode) outlives a client that
closes the port, and nothing the client does can end the console.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import logging
import os
import select
import termios
import threading
import time
import tty
from collections.abc import Callable

from virtual.terminal import LineSession, LineSessionBase, Terminal
from virtual.wakeup import Waker

log = logging.getLogger(__name__)

ConsoleFactory = Callable[[], LineSession]
_WRITE_STALL = 1.0  # seconds to wait for a reader before dropping output, as a serial line would
_IDLE_POLL = 0.05  # seconds between looks for a client while none has the port open


class _Idle(LineSessionBase):
    """The line after a logout: nothing until Enter, like 'Press RETURN to get started.'"""

    def __init__(self, banner: str) -> None:
        self._banner = banner

    @property
    def echo(self) -> bool:
        return False

    def greeting(self) -> str:
        return self._banner

    def prompt(self) -> str:
        return ""

    def feed(self, line: str) -> str:
        self.closed = True
        return ""

    def interrupt(self, key: str) -> str:
        return ""


class _Login(LineSessionBase):
    """A console line login (Username:/Password:), used when the console is given users."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users
        self._user: str | None = None

    @property
    def echo(self) -> bool:
        return self._user is None

    def greeting(self) -> str:
        return "\r\nUser Access Verification\r\n\r\n" + self.prompt()

    def prompt(self) -> str:
        return "Username: " if self._user is None else "Password: "

    def feed(self, line: str) -> str:
        if self._user is None:
            self._user = line.strip()
            return self.prompt()
        user, self._user = self._user, None
        expected = self._users.get(user)
        if expected is not None and hmac.compare_digest(expected.encode(), line.encode()):
            self.closed = True
            return ""
        return "% Login invalid\r\n\r\n" + self.prompt()

    def interrupt(self, key: str) -> str:
        self._user = None
        return "\r\n" + self.prompt()


class PtyConsole:
    """Serve line CLIs on a pseudo-terminal; clients open ``.path`` with pyserial.

    ``cli_factory()`` makes a new CLI session (after a logout, or after a console login when
    ``users`` is given). Serving starts at construction; ``close()`` ends it.
    We hold no descriptor on the slave: while no client has it open the master reports HUP/EIO, the
    loop then idles, and output produced meanwhile is dropped as on an unattended serial line. Only
    ``close()`` ends the loop; no client action can.
    """

    def __init__(
        self,
        cli_factory: ConsoleFactory,
        *,
        users: dict[str, str] | None = None,
        hostname: str = "",
        link: str | os.PathLike[str] | None = None,
    ) -> None:
        self._factory = cli_factory
        self._users = dict(users) if users else None
        self._hostname = hostname
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        tty.setraw(slave, termios.TCSANOW)  # persists while the master is open; clients may change it
        os.close(slave)
        os.set_blocking(self.master, False)
        self.link = str(link) if link else None
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)
            os.symlink(self.path, self.link)
        self._waker = Waker()
        self._thread: threading.Thread | None = None
        self._term = Terminal(self._first_session())
        self.start()

    def __enter__(self) -> PtyConsole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"console-{self.path}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop serving and release the pty (clients then see EOF/hangup). Idempotent."""
        if not self._waker.stop(self._thread):
            return
        if self.link:
            with contextlib.suppress(OSError):
                if os.readlink(self.link) == self.path:
                    os.unlink(self.link)
        with contextlib.suppress(OSError):
            os.close(self.master)
        self._waker.close()

    @property
    def session(self) -> LineSession:
        """The session currently on the line (CLI, login or idle)."""
        return self._term.session

    def _first_session(self) -> LineSession:
        if self._users:
            return _Idle(self._available())
        return self._factory()

    def _available(self) -> str:
        name = f"{self._hostname} con0" if self._hostname else "con0"
        return f"\r\n\r\n{name} is now available\r\n\r\n\r\n\r\nPress RETURN to get started.\r\n"

    def _client_attached(self) -> bool:
        poller = select.poll()
        poller.register(self.master, select.POLLOUT)
        return not any(ev & select.POLLHUP for _, ev in poller.poll(0))

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        poller.register(self._waker, select.POLLIN)
        while not self._waker.stopped:
            events = dict(poller.poll(1000))
            if self._waker.stopped:
                return
            event = events.get(self.master, 0)
            if not event & select.POLLIN:
                if event & (select.POLLHUP | select.POLLERR):
                    time.sleep(_IDLE_POLL)  # nobody has the slave open; look again shortly
                continue
            try:
                data = os.read(self.master, 4096)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:
                    log.warning("console %s: read failed: %s", self.path, exc)
                time.sleep(_IDLE_POLL)
                continue
            try:
                out = self._receive(data)
            except Exception:
                log.exception("console %s: session crashed; starting a new one", self.path)
                try:
                    self._term = self._term.successor(self._factory())
                except Exception:
                    log.exception("console %s: cannot start a session", self.path)
                    time.sleep(1.0)
                continue
            if self._client_attached():
                self._write(out)

    def _receive(self, data: bytes) -> bytes:
        out = self._term.receive(data)
        while self._term.closed:
            # The session on the line ended: move to the next one and give it the keys typed ahead.
            ended, rest = self._term.session, self._term.leftover
            if isinstance(ended, _Idle):
                nxt: LineSession = _Login(self._users) if self._users else self._factory()
            elif isinstance(ended, _Login):
                nxt = self._factory()
            else:
                nxt = _Idle(self._available())
            self._term = self._term.successor(nxt)
            out += self._term.start() + self._term.feed_text(rest)
        return out

    def _write(self, data: bytes) -> None:
        deadline = time.monotonic() + _WRITE_STALL
        while data and not self._waker.stopped:
            try:
                written = os.write(self.master, data)
                data = data[written:]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.debug("console %s: nobody reading, dropped %d bytes", self.path, len(data))
                    return
                select.select([], [self.master], [], left)
            except OSError:
                return
