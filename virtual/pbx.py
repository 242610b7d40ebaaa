"""Site PBX of the virtual lab: one real Kamailio 5.6 per site, configured and started from Python.

Why Kamailio and not an emulation: the harness judges recovery from what the PBX shows, so the PBX must be
a real registrar (digest auth, location table, call routing) with a real management interface.

Use (the lab keeper prefixes argv to enter the site's PBX network namespace)::

    spec = PbxSpec("sha-pbx1", "198.18.1.10", 5060, 5080, "sha.lab", Path("/run/lab/sha-pbx1"), creds)
    proc = start(spec, prefix=["ip", "netns", "exec", "sha-pbx"])   # or Popen(prefix + write_files(spec))
    wait_ready("198.18.1.10", 5060, 3.0, proc, spec.boot_id)         # OPTIONS 200 from this start
    ...
    stop(proc)          # or kill(proc) to crash it as a fault would (main and workers at once)

Both sites get the same ``extensions`` (every extension of every agent pool), so a phone can move to the
other site's PBX. Credentials are stored as HA1 = md5(ext:realm:password) in a db_text table that an
htable loads once at start-up (10,000 extensions: about the same start-up time as 10). The location table
is in memory only (usrloc db_mode 0, use_domain 0: the AOR is the bare extension); one contact per
extension (save flag 0x04), so a phone re-registering from a new address replaces its old binding.

SIP behaviour (UDP and TCP on ``listen:sip_port``):
- OPTIONS to the server itself (no user part) -> 200 with ``X-Pbx-Boot: <boot_id>`` (new at every
  start): the readiness and CTI liveness probe; a changed boot id shows a restart from outside.
- REGISTER: unknown extension -> 403; no or stale credentials -> 401 (qop=auth); wrong password or an
  auth user other than the To user -> 403; otherwise 200 and the contact is in the location table.
  ``Expires: 0`` removes it. Expires are clamped to 5..7200 s (default 3600).
- INVITE (and MESSAGE, OPTIONS to an extension, ...) from an extension must carry that extension's
  credentials (407 challenge, 403 on a wrong password, 403 for an unknown From user). Target unknown ->
  404, known but not registered -> 480, registered -> record-routed and relayed statefully (tm) to its
  contact. ACK/BYE follow the Record-Route set. SUBSCRIBE/PUBLISH -> 405.

JSON-RPC 2.0 over HTTP (``POST http://<listen>:<rpc_port>/RPC``): the client and the reply shapes captured
from Kamailio 5.6.3 are in virtual/pbxrpc.py (re-exported here: ``jsonrpc``, ``lookup``, ``registered_aors``,
``registrations``, ``statistics``, ``RpcError``).

Measured on the 2-core lab host (bench/bench_pbx_start.py, loopback, all extensions registered):

    contacts   exec->OPTIONS 200   ul.lookup   ul.dump brief       ul.dump (full)
       1,000        21 ms           0.3 ms        5 ms               22 ms (0.6 MB)
       5,000        21 ms           0.3 ms       73 ms              169 ms (2.8 MB)
      10,000        22 ms           0.3 ms      260 ms (0.2 MB)     530 ms (5.6 MB)
      20,000        53 ms           0.3 ms     1100 ms             1970 ms (11 MB)

Start-up uses the TLSF allocator (Kamailio's default q_malloc: 150 ms at 10,000). The dumps grow
quadratically because Kamailio's srjson appends to an array by walking it; a CTI polling ``ul.dump
brief`` every 0.5 s is cheap at a site's 1,000-2,000 agents but costs half a core at 10,000, where it
should switch to per-AOR ``ul.lookup`` or to the pushed events below.

How a CTI learns registration changes:
1. Pull (always available): ``ul.lookup location <ext>`` per agent, or ``ul.dump`` for the whole table.
2. Push (``PbxSpec.event_target`` set): after every successful save() Kamailio sends a SIP MESSAGE
   (uac module, ``uac_req_send``, stateful via tm) to ``event_target`` with ``Content-Type:
   application/json`` and a body ``{"event": "registered"|"unregistered"|"expired", "pbx": <name>,
   "ext": <ext>, "contact": <uri or "">, "expires": <seconds left>, "source": "<ip>:<port>" or "",
   "callid": <REGISTER Call-ID>, "cseq": <int>, "seq": <int>, "boot": <boot_id>, "ts": <unix time>}``.
   MESSAGEs leave from several workers and may arrive out of order: ``seq`` increases PBX-wide from 1
   per ``boot`` and is taken under a per-extension lock with save(), so a CTI applies an event only if
   its (boot, seq) is newer than the last one applied for that extension. ``"`` and ``\\`` in Call-ID or
   contact become ``_`` (the body is built in the config script). "expired" comes from the usrloc
   timer (every ``expiry_check_s``, default 10 s) when a phone stops refreshing.
   Why SIP MESSAGE: the base ``kamailio`` package the Makefile installs has no HTTP client module
   (http_client / http_async_client come in separate Debian module packages the lab does not install),
   uac_req_send needs nothing beyond tm, and tm retransmits over UDP.
   The CTI consumes them with ``--pbx-events ADDR:PORT`` (stack/cti/pbxevents.py answers each MESSAGE
   200; the virtual lab points every PBX at its site's CTI, port 5090, virtual/stackservices.py) and
   answers ``link_phone`` from them without a lookup. Events are hints, not the truth: MESSAGEs sent
   while the CTI is down are dropped after the tm timeout, so the CTI still reconciles with ``ul.dump``
   on (re)start, when its link to the PBX comes back, on a new ``boot`` and every 30 s.
"""

from __future__ import annotations

import glob
import ipaddress
import math
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sipcore import digest
from sipcore.probe import options
from virtual.pbxrpc import RpcError, jsonrpc, lookup, registered_aors, registrations, statistics

__all__ = [
    "CRED_TABLE",
    "KAMAILIO",
    "TEMPLATE",
    "PbxSpec",
    "RpcError",
    "command",
    "event_uri",
    "group_members",
    "ha1",
    "jsonrpc",
    "kill",
    "lookup",
    "registered_aors",
    "registrations",
    "render_config",
    "start",
    "statistics",
    "stop",
    "wait_ready",
    "write_files",
]

KAMAILIO = "/usr/sbin/kamailio"
TEMPLATE = Path(__file__).with_name("kamailio.cfg.tmpl")
CRED_TABLE = "pbx_creds"
_EXT_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_EVENT_RE = re.compile(r"^[^\s\"\\]+$")


def _modules_dir() -> str:
    """Kamailio's module directory on this host (Debian multiarch first)."""
    for cand in sorted(glob.glob("/usr/lib/*/kamailio/modules")) + [
        "/usr/lib/kamailio/modules",
        "/usr/local/lib64/kamailio/modules",
        "/usr/local/lib/kamailio/modules",
    ]:
        if os.path.isfile(os.path.join(cand, "tm.so")):
            return cand + "/"
    return "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


@dataclass
class PbxSpec:
    """What one site PBX is: its name, sockets, digest realm, work dir and the extension table.

    ``extensions`` maps extension -> plain password (HA1 is derived, the password is not written).
    ``event_target`` (``"ip:port"`` or a SIP URI) enables registration events to a CTI;
    ``expiry_check_s`` is how often usrloc drops expired contacts (and reports them as "expired").
    ``children`` UDP workers (4: two per core of the 2-core lab host; routing never blocks on DB or
    DNS, so more would only add context switches); ``tcp_children`` serve SIP over TCP and JSON-RPC.
    ``log_registers`` adds one NOTICE line per REGISTER to the log (off: errors only).
    ``allocator`` is Kamailio's memory manager (``-x``): tlsf (default), fm, or qm (slow, for debugging).
    ``boot_id`` is set by :func:`write_files` (new at every start) and sent by the PBX in the
    ``X-Pbx-Boot`` header of its OPTIONS answer: pass it to :func:`wait_ready`.
    ``shm_mb`` is reserved, not used up front (~26 MB PSS for a running PBX with 10,000 extensions);
    256 MB because a 10,000-phone storm with events on and the CTI down holds ~90 MB of MESSAGE
    transactions until tm gives up on them (4 s).
    """

    name: str
    listen: str
    sip_port: int
    rpc_port: int
    realm: str
    workdir: Path
    extensions: dict[str, str]
    event_target: str | None = None
    rpc_also_listen: list[str] = field(default_factory=list)
    rpc_listen: str | None = None
    rpc_allow: list[str] = field(default_factory=list)
    children: int = 4
    tcp_children: int = 3
    log_registers: bool = False
    expiry_check_s: int = 10
    shm_mb: int = 256
    pkg_mb: int = 32
    allocator: str = "tlsf"
    kamailio: str = KAMAILIO
    boot_id: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        if not _TOKEN_RE.match(self.name):
            raise ValueError(f"bad PBX name {self.name!r}")
        if not _TOKEN_RE.match(self.realm):
            raise ValueError(f"bad realm {self.realm!r}")
        addr = ipaddress.ip_address(self.listen)
        if addr.is_unspecified:
            raise ValueError("listen must be a concrete address, never 0.0.0.0 or ::")
        for port in (self.sip_port, self.rpc_port):
            if not 0 < port < 65536:
                raise ValueError(f"bad port {port}")
        if self.sip_port == self.rpc_port:
            raise ValueError("sip_port and rpc_port must differ")
        bad = [e for e in self.extensions if not _EXT_RE.match(e)]
        if bad:
            raise ValueError(f"bad extension names: {bad[:5]}")
        if self.allocator not in ("tlsf", "fm", "qm"):
            raise ValueError(f"bad allocator {self.allocator!r}")
        for a in [*self.rpc_allow, *([self.rpc_listen] if self.rpc_listen else []), *self.rpc_also_listen]:
            ipaddress.ip_address(a)  # a ValueError names it: nothing but addresses goes into the config
        if self.event_target is not None and not _EVENT_RE.match(self.event_target):
            raise ValueError(f"bad event target {self.event_target!r}")

    @property
    def listen_host(self) -> str:
        """The listen address as Kamailio and SIP URIs write it (IPv6 in brackets)."""
        return f"[{self.listen}]" if ":" in self.listen else self.listen

    @property
    def cfg_path(self) -> Path:
        return self.workdir / "kamailio.cfg"

    @property
    def db_dir(self) -> Path:
        return self.workdir / "db"

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "kamailio.pid"

    @property
    def log_file(self) -> Path:
        return self.workdir / "kamailio.log"

    @property
    def rpc_url(self) -> str:
        host = self.listen_host if self.rpc_listen is None else _bracket(self.rpc_listen)
        return f"http://{host}:{self.rpc_port}/RPC"


def ha1(ext: str, realm: str, password: str) -> str:
    """RFC 2617 HA1 for MD5: what the PBX stores instead of the password."""
    return digest.ha1(ext, realm, password)


def _bracket(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr


def _rpc_acl(allow: list[str]) -> str:
    """The kamailio.cfg lines refusing the RPC to any source but ``allow`` (none: no ACL)."""
    if not allow:
        return ""
    cond = " && ".join(f'$si != "{a}"' for a in allow)
    return (
        f"\tif ({cond}) {{\n"
        '\t\txlog("L_WARN", "RPC refused to $si:$sp: not a management client\\n");\n'
        '\t\txhttp_reply("403", "Forbidden", "text/plain", "RPC: management clients only\\n");\n'
        "\t\texit;\n\t}\n"
    )


def event_uri(target: str) -> str:
    """SIP URI for the CTI event target: ``ip:port`` becomes ``sip:pbx-events@ip:port``."""
    return target if target.startswith(("sip:", "sips:")) else f"sip:pbx-events@{target}"


def render_config(spec: PbxSpec) -> str:
    """The kamailio.cfg text for ``spec`` (template placeholders filled, feature switches defined)."""
    bits = min(14, max(4, math.ceil(math.log2(max(len(spec.extensions), 1)))))
    values = {
        "NAME": spec.name,
        "LISTEN": spec.listen_host,
        "SIP_PORT": str(spec.sip_port),
        "RPC_PORT": str(spec.rpc_port),
        "REALM": spec.realm,
        "DEBUG": "1" if spec.log_registers else "-1",
        "CHILDREN": str(spec.children),
        "TCP_CHILDREN": str(spec.tcp_children),
        "MPATH": _modules_dir(),
        "DBDIR": str(spec.db_dir.resolve()),
        "CRED_TABLE": CRED_TABLE,
        "HASH_BITS": str(bits),
        "EXPIRY_CHECK": str(spec.expiry_check_s),
        "EVENT_URI": event_uri(spec.event_target) if spec.event_target else "",
        "BOOT_ID": spec.boot_id or "none",
        # JSON-RPC on the management address only when there is one (``rpc_listen``: an agent desktop on
        # the data network must not reach ``ul.rm``), else on the SIP address; ``rpc_also_listen`` adds
        # more. ``rpc_allow`` then refuses (403) any source but the CTIs and the controller.
        "RPC_LISTEN": f"listen=tcp:{_bracket(spec.rpc_listen) if spec.rpc_listen else spec.listen_host}"
        f":{spec.rpc_port}",
        "RPC_EXTRA_LISTEN": "".join(f"listen=tcp:{a}:{spec.rpc_port}\n" for a in spec.rpc_also_listen),
        "RPC_ACL": _rpc_acl(spec.rpc_allow),
    }

    def fill(match: re.Match[str]) -> str:
        return values[match.group(1)]

    text = re.sub(r"\{\{([A-Z_]+)\}\}", fill, TEMPLATE.read_text())
    defines = []
    if spec.event_target:
        defines.append("#!define WITH_EVENTS")
    if spec.log_registers:
        defines.append("#!define WITH_REGLOG")
    first, _, rest = text.partition("\n")
    return "\n".join([first, *defines, rest])


def write_files(spec: PbxSpec) -> list[str]:
    """Write the config and credential table under ``spec.workdir``; return the foreground argv.

    The argv runs Kamailio in the foreground (``-DD``) logging to stderr (``-E``), with its pid file and
    runtime dir inside the work dir so two PBXs on one machine never share /run/kamailio. Sets a new
    ``spec.boot_id`` for this start.
    """
    spec.workdir.mkdir(parents=True, exist_ok=True)
    spec.db_dir.mkdir(exist_ok=True)
    spec.run_dir.mkdir(exist_ok=True)
    spec.boot_id = secrets.token_hex(8)
    lines = ["ext(str) ha1(str)\n"]
    lines += [f"{ext}:{ha1(ext, spec.realm, pw)}\n" for ext, pw in spec.extensions.items()]
    table = spec.db_dir / CRED_TABLE
    tmp = table.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(lines))
    os.replace(tmp, table)
    spec.cfg_path.write_text(render_config(spec))
    return command(spec)


def command(spec: PbxSpec) -> list[str]:
    """The foreground argv for the files :func:`write_files` writes (the same for every start)."""
    return [
        spec.kamailio,
        "-f",
        str(spec.cfg_path.resolve()),
        "-DD",
        "-E",
        "-P",
        str(spec.pid_file.resolve()),
        "-Y",
        str(spec.run_dir.resolve()),
        "-w",
        str(spec.workdir.resolve()),
        "-m",
        str(spec.shm_mb),
        "-M",
        str(spec.pkg_mb),
        # Kamailio's default q_malloc (a first-fit debugging allocator) makes start-up superlinear in
        # the extension count (150 ms at 10,000, ~0.7 s at 50,000); TLSF loads 10,000 in ~20 ms and
        # 50,000 in ~80 ms. Applies to shared and private memory.
        "-x",
        spec.allocator,
    ]


def start(spec: PbxSpec, prefix: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Write the files and start Kamailio as a child, output appended to ``spec.log_file``.

    The child leads a new session, so its process group id is its PID: :func:`stop` can then also reap
    the worker processes (Kamailio workers outlive a SIGKILLed main process and keep serving SIP).
    ``prefix`` must exec (``ip netns exec``, ``nsenter`` without ``--fork``) so the PID is Kamailio's.
    """
    argv = [*prefix, *write_files(spec)]
    with open(spec.log_file, "ab") as log:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, read from /proc.

    Why not ``killpg(pgid, 0)``: workers orphaned by a killed main process become zombies when nothing
    reaps them (a container's PID 1 often does not), and a zombie still counts for kill(2).
    """
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(entry))
    return out


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def stop(proc: subprocess.Popen[bytes] | int, timeout: float = 5.0) -> None:
    """Stop one PBX started by :func:`start` (a session leader): SIGTERM its PID so Kamailio shuts its
    workers down cleanly; SIGKILL its own process group if anything is left after ``timeout``, or at
    once when the main process is already gone (orphaned workers would otherwise keep serving SIP).
    Never touches processes outside that group."""
    pid = proc if isinstance(proc, int) else proc.pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    t0 = time.monotonic()
    deadline = t0 + timeout
    orphaned_since: float | None = None
    nudged = False
    while True:
        if isinstance(proc, subprocess.Popen):
            proc.poll()
        main_alive = _alive(pid)
        if not main_alive and not group_members(pid):
            break
        now = time.monotonic()
        if not nudged and now - t0 > 0.2:
            # A child still initialising when the main relays SIGTERM keeps the main's handler (which
            # only sets a flag) and never exits; by now it has its own handler, so tell it again.
            _signal_group(pid, signal.SIGTERM)
            nudged = True
        if not main_alive:
            orphaned_since = orphaned_since or now
        if now >= deadline or (orphaned_since is not None and now - orphaned_since > 0.5):
            _signal_group(pid, signal.SIGKILL)
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + 2.0
            while (_alive(pid) or group_members(pid)) and time.monotonic() < end:
                time.sleep(0.01)
            break
        time.sleep(0.02)
    if isinstance(proc, subprocess.Popen):
        proc.wait(timeout=timeout)


def kill(proc: subprocess.Popen[bytes] | int) -> None:
    """Crash a PBX the way a fault should: SIGKILL main and workers at once (its own process group).

    Killing only the main PID is not a PBX failure: the UDP workers keep answering SIP.
    """
    pid = proc if isinstance(proc, int) else proc.pid
    _signal_group(pid, signal.SIGKILL)
    end = time.monotonic() + 2.0
    while group_members(pid) and time.monotonic() < end:
        time.sleep(0.01)
    if isinstance(proc, subprocess.Popen):
        proc.wait(timeout=2.0)


def wait_ready(
    host: str,
    port: int,
    timeout: float = 5.0,
    proc: subprocess.Popen[bytes] | None = None,
    boot_id: str | None = None,
) -> float:
    """Poll OPTIONS until the PBX answers 200; return the seconds waited.

    With ``boot_id`` (``spec.boot_id``) only an answer carrying it counts, so an older PBX still
    answering on the same address cannot pass for this start (a pid file cannot tell: Kamailio writes
    it before binding its sockets). Raises TimeoutError, or RuntimeError at once if ``proc`` (the
    Kamailio child) has exited, which is what a bad config or a port in use looks like.
    """
    t0 = time.monotonic()
    # Short pings first (a ping sent before the socket is bound is simply lost), longer ones later so a
    # busy PBX that answers slowly is still seen as ready.
    per_ping = 0.02
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"kamailio exited with {proc.returncode} before answering on {host}:{port}")
        left = timeout - (time.monotonic() - t0)
        if left <= 0:
            raise TimeoutError(f"PBX {host}:{port} not answering OPTIONS after {timeout:.1f}s")
        resp = options(host, port, timeout=min(per_ping, left))
        if resp is not None and resp.status == 200:
            if boot_id is None or resp.header("X-Pbx-Boot") == boot_id:
                return time.monotonic() - t0
        per_ping = min(per_ping * 1.5, 1.0)
