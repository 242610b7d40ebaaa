"""Who may log in to the console, with which role, from the environment only.

Why the environment: a password must never be in the repository, on a command line (``ps`` shows it) or in
a log; the lab and a site's unit file set ``HIL_CONSOLE_USERS="alice:operator,bob:viewer"`` and one
variable per user, ``HIL_CONSOLE_PASSWORD_ALICE`` (the name upper-cased, anything but letters and digits
as ``_``). A user whose password variable is unset cannot log in (logged by variable name, never value).
Roles: ``viewer`` reads; ``operator`` also adds and removes planned switches.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from stack.common import auth

log = logging.getLogger("stack.console")

USERS_VAR = "HIL_CONSOLE_USERS"
ROLES = ("viewer", "operator")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def password_var(user: str) -> str:
    return "HIL_CONSOLE_PASSWORD_" + re.sub(r"[^A-Za-z0-9]", "_", user).upper()


@dataclass
class Accounts:
    """Users by name: (role, password)."""

    users: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Accounts:
        """Parse ``HIL_CONSOLE_USERS``; a malformed entry or an unknown role raises ValueError naming it."""
        out: dict[str, tuple[str, str]] = {}
        for entry in filter(None, (e.strip() for e in env.get(USERS_VAR, "").split(","))):
            name, sep, role = entry.partition(":")
            if not sep or not _NAME.match(name) or role not in ROLES:
                raise ValueError(f"{USERS_VAR}: {entry!r} is not NAME:{'|'.join(ROLES)}")
            password = env.get(password_var(name), "")
            if not password:
                log.warning("console: user %s cannot log in: %s is not set", name, password_var(name))
                continue
            out[name] = (role, password)
        if not out:
            log.warning("console: no user can log in (set %s and the users' password variables)", USERS_VAR)
        return cls(out)

    def check(self, user: str, password: str) -> str | None:
        """The user's role when the password is right, else None; the same work either way (no timing
        oracle on which names exist)."""
        role, want = self.users.get(user, ("", "\0" * 32))
        good = auth.same(hmac.new(b"console", password.encode(errors="replace"), "sha256").digest(),
                         hmac.new(b"console", want.encode(errors="replace"), "sha256").digest())  # fmt: skip
        return role if good and role else None
