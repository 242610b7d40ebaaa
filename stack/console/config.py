"""What the console is told: the sites it reads, the key of its session cookie, how often it reads.

Why from the command line of the UL (``--console-site``, repeated): the UL already knows its peer, its CTI
and its PBX by address; the console needs the same of every site (and the PBX's management RPC, which the
UL does not use), so each site is one option the lab's service plan (or a site's unit file) writes:

    --console-site sha,ul=http://198.18.1.30:8080,cti=198.18.1.20:7000,pbx=http://198.19.0.11:5071/RPC

The first ``--console-site`` whose code is the UL's own site is home: rules are changed through it.
Secrets never come from the command line: the session key is ``HIL_CONSOLE_KEY`` (any string; without it
a random key, so sessions end when the UL restarts), the users are stack/console/accounts.py.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from stack.common.addr import hostport
from stack.common.directory import Directory
from stack.console.accounts import Accounts

log = logging.getLogger("stack.console")

KEY_VAR = "HIL_CONSOLE_KEY"
PARTS = ("ul", "cti", "pbx")


@dataclass(frozen=True)
class SiteEndpoints:
    """Where one site's UL (base URL), CTI (host, port) and PBX management RPC (URL) answer; None: not
    configured (shown as such, never as an error)."""

    code: str
    ul: str | None = None
    cti: tuple[str, int] | None = None
    pbx: str | None = None


@dataclass
class ConsoleConfig:
    """Everything :func:`stack.console.add_console` needs; ``home`` is the site whose UL serves it."""

    home: str
    sites: list[SiteEndpoints]
    secret: str  # the lab's stack secret: signs the rule requests to the home UL, as ``hil switch`` does
    accounts: Accounts
    key: bytes = field(repr=False, default=b"")
    directory: Directory | None = None  # agents' skill groups; without it agents count as "unknown"
    interval: float = 1.0  # seconds between two reads of every site while someone watches
    timeout: float = 2.0  # seconds one read of one part may take (a loaded site answers late, not never)
    max_age: int = 8 * 3600  # seconds a log-in lasts

    def __post_init__(self) -> None:
        if not self.key:
            self.key = session_key(os.environ)
        codes = [s.code for s in self.sites]
        if len(set(codes)) != len(codes):
            raise ValueError(f"--console-site: a site is given twice ({', '.join(codes)})")
        if self.home not in codes:
            self.sites.insert(0, SiteEndpoints(self.home))
        self.sites.sort(key=lambda s: s.code != self.home)  # home first, the others in the given order

    def endpoints(self, code: str) -> SiteEndpoints:
        return next(s for s in self.sites if s.code == code)


def session_key(env: Mapping[str, str]) -> bytes:
    """32 bytes for the encrypted session cookie: from ``HIL_CONSOLE_KEY`` (hashed, so any string will do
    and every UL given the same value accepts the others' cookies), else random for this process."""
    value = env.get(KEY_VAR)
    if value:
        return hashlib.sha256(value.encode()).digest()
    log.info("console: %s is not set: a random session key (log-ins end when this process does)", KEY_VAR)
    return secrets.token_bytes(32)


def parse_site(text: str) -> SiteEndpoints:
    """``CODE,ul=URL,cti=HOST:PORT,pbx=URL`` (any of the three may be left out); argparse type."""
    code, *pairs = [p.strip() for p in text.split(",")]
    if not code or "=" in code:
        raise argparse.ArgumentTypeError(f"expected CODE,ul=URL,cti=HOST:PORT,pbx=URL, got {text!r}")
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in PARTS or name in found or not value:
            raise argparse.ArgumentTypeError(f"{text!r}: {pair!r} is not one of ul=, cti=, pbx= (once each)")
        found[name] = value
    for name in ("ul", "pbx"):
        if name in found:
            url = urlsplit(found[name])
            if url.scheme not in ("http", "https") or not url.hostname:
                raise argparse.ArgumentTypeError(f"{text!r}: {name}= must be an http(s) URL")
    cti = hostport(found["cti"]) if "cti" in found else None
    ul = found["ul"].rstrip("/") if "ul" in found else None
    return SiteEndpoints(code, ul, cti, found.get("pbx"))


def add_console_args(ap: argparse.ArgumentParser) -> None:
    """The console's options on a UL's command line (none given: no console)."""
    ap.add_argument(
        "--console-site",
        action="append",
        default=[],
        type=parse_site,
        metavar="CODE,ul=URL,cti=HOST:PORT,pbx=URL",
        help="serve the management console at /console/ and read this site there (repeat for each site)",
    )
    ap.add_argument(
        "--console-interval", type=float, default=1.0, help="seconds between the console's reads of the sites"
    )


def console_config(
    args: argparse.Namespace,
    secret: str,
    directory: Directory | None = None,
    env: Mapping[str, str] = os.environ,
) -> ConsoleConfig | None:
    """The console's configuration from the parsed options and the environment; None without
    ``--console-site``. A user list that does not parse raises ValueError (the UL refuses to start)."""
    if not args.console_site:
        return None
    return ConsoleConfig(
        home=args.site,
        sites=list(args.console_site),
        secret=secret,
        accounts=Accounts.from_env(env),
        key=session_key(env),
        directory=directory,
        interval=max(0.2, float(args.console_interval)),
    )
