"""Line discipline shared by the emulated SSH shell and the serial console.

Why: netmiko, paramiko and pyserial all see a raw byte stream. A real device's line editor echoes
keys, turns Enter into CRLF, hides what is typed at a password prompt and stops at ``--More--``.
Both transports must behave the same, so the byte-level rules live here once and the CLIs stay
line-oriented (``feed(line) -> output``).
"""

from __future__ import annotations

import codecs
from typing import Protocol, runtime_checkable


@runtime_checkable
class LineSession(Protocol):
    """A line-oriented CLI that a Terminal drives (SwitchCLI, HostCLI)."""

    @property
    def closed(self) -> bool:
        """True once the user logged out; the transport then ends the session."""
        ...

    @property
    def echo(self) -> bool:
        """False while the CLI asks for a secret, so typed keys are not echoed."""
        ...

    @property
    def more_pending(self) -> bool:
        """True while output waits at a pager prompt; keys then go to feed_key()."""
        ...

    def greeting(self) -> str:
        """Text sent when the session opens, ending with the first prompt."""
        ...

    def feed(self, line: str) -> str:
        """Run one entered line; return its output followed by the next prompt."""
        ...

    def feed_key(self, key: str) -> str:
        """Handle one key pressed at a pager prompt."""
        ...

    def interrupt(self, key: str) -> str:
        """Handle Ctrl-C (``\\x03``) or Ctrl-Z (``\\x1a``)."""
        ...


@runtime_checkable
class ExecSession(Protocol):
    """A CLI that can run one command non-interactively (SSH ``exec`` requests)."""

    def run(self, command: str) -> tuple[int, str, str]:
        """Return (exit status, stdout, stderr)."""
        ...


class LineSessionBase:
    """Defaults for CLIs that need no pager, no secret prompts and no special interrupt."""

    closed: bool = False

    @property
    def echo(self) -> bool:
        return True

    @property
    def more_pending(self) -> bool:
        return False

    def prompt(self) -> str:
        raise NotImplementedError

    def greeting(self) -> str:
        return self.prompt()

    def feed_key(self, key: str) -> str:
        return ""

    def interrupt(self, key: str) -> str:
        return "^C\r\n" + self.prompt()


_BACKSPACE = ("\x7f", "\x08")
_INTERRUPT = ("\x03", "\x1a")
_KILL_LINE = "\x15"


class Terminal:
    """Turns received bytes into CLI lines and the CLI's answers into bytes, like a device tty.

    Enter is CR, LF or CRLF (netmiko sends LF, serial terminals CR); escape sequences such as arrow
    keys are swallowed; NUL (netmiko's keepalive) and other control keys are ignored.
    """

    def __init__(self, session: LineSession) -> None:
        self.session = session
        self._line: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._after_cr = False
        self._esc = 0  # 0: none, 1: after ESC, 2: inside a CSI/SS3 sequence
        self.leftover = ""

    @property
    def closed(self) -> bool:
        return self.session.closed

    def start(self) -> bytes:
        """Bytes to send when the session opens (banner and first prompt)."""
        return self.session.greeting().encode()

    def successor(self, session: LineSession) -> Terminal:
        """A terminal for the next session on the same line (console login -> CLI -> logout).

        It inherits the half-received state, so the LF of a CRLF that ended the last session is
        not taken as an Enter by the next one.
        """
        nxt = Terminal(session)
        nxt._decoder, nxt._after_cr, nxt._esc = self._decoder, self._after_cr, self._esc
        return nxt

    def reset(self) -> None:
        """Forget a half-typed line (a console client went away)."""
        self._line.clear()
        self._after_cr = False
        self._esc = 0

    def receive(self, data: bytes) -> bytes:
        """Process received bytes; return what the device writes back."""
        return self.feed_text(self._decoder.decode(data))

    def feed_text(self, text: str) -> bytes:
        """Process decoded keys. Keys typed after the session closed are kept in ``leftover``."""
        out: list[str] = []
        self.leftover = ""
        for i, ch in enumerate(text):
            if self.session.closed:
                self.leftover = text[i:]
                break
            out.append(self._key(ch))
        return "".join(out).encode()

    def _key(self, ch: str) -> str:
        if self._esc == 1:
            self._esc = 2 if ch in "[O" else 0
            return ""
        if self._esc == 2:
            if "@" <= ch <= "~":
                self._esc = 0
            return ""
        if ch == "\x1b":
            self._esc = 1
            return ""
        if ch == "\n" and self._after_cr:
            self._after_cr = False
            return ""
        self._after_cr = ch == "\r"
        session = self.session
        if session.more_pending:
            return session.feed_key("\r" if ch == "\n" else ch)
        if ch in "\r\n":
            line = "".join(self._line)
            self._line.clear()
            return "\r\n" + session.feed(line)
        if ch in _BACKSPACE:
            if not self._line:
                return ""
            self._line.pop()
            return "\b \b" if session.echo else ""
        if ch == _KILL_LINE:
            erased, self._line = len(self._line), []
            return "\b \b" * erased if session.echo else ""
        if ch in _INTERRUPT:
            self._line.clear()
            return session.interrupt(ch)
        if ch < " ":
            return ""
        self._line.append(ch)
        return ch if session.echo else ""
