"""Test caller (pyVoIP): register at a PBX, call an extension, report answered / busy / no answer / failed.

Why: "a customer call reaches an agent after failover" is proved by placing a real call. pyVoIP is UDP-only
and threaded, so each call runs in a process of its own on the caller host, where a physical lab has it:
on the virtual lab a subprocess in the host's network namespace (`nsenter`); on a physical lab (and on the
twin driven as one) the program named by the host's `caller_command`, started over SSH (the password on its
stdin, never on a command line), stopped with `kill` over SSH when it overruns, its result file fetched over
SFTP. The program is this module (`python -m harness.drivers.caller ...`): it prints one JSON line with the
outcome and timings, and writes it to `--out` when given.

pyVoIP 1.6 registers fine against kamailio but leaves gaps in the calling side that a real PBX exposes, so
the subprocess fills them on top of pyVoIP's client (not instead of it): INVITE proxy authentication
(407), final responses >= 300 (486 busy, 480, 403, 487 after CANCEL) with their ACK, CANCEL on the ring
timeout, and the in-dialog ACK/BYE sent along the PBX's Record-Route (kamailio refuses them otherwise).
pyVoIP's own VoIPCall still does the media: an answered call gets its RTP stream.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import secrets
import select
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from harness.drivers import driver_for
from harness.drivers.base import DeviceError, DeviceUnreachable, Driver, Steps
from sipcore.digest import authorization, parse_challenge
from sipcore.message import parse as parse_sip

PASSWORD_ENV = "HIL_CALLER_PASSWORD"
OUTCOMES = ("answered", "busy", "no_answer", "failed", "register_failed")


@dataclass
class CallResult:
    """One call as the caller saw it; times in seconds from sending the INVITE."""

    outcome: str  # answered | busy | no_answer | failed | register_failed | dry_run
    to: str
    pbx: str
    status: int | None = None  # the final SIP status (200, 486, 487, 480, ...)
    reason: str = ""
    register_s: float | None = None  # REGISTER round trip
    ringing_s: float | None = None  # INVITE -> 180
    answered_s: float | None = None  # INVITE -> 200
    ended_s: float | None = None  # INVITE -> end (final response, or our BYE)
    rtp: bool = False  # pyVoIP set up the media stream of the answered call

    @property
    def answered(self) -> bool:
        return self.outcome == "answered"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CallerDriver(Driver):
    """A SIP test caller on one lab host, registered as `extension` at `pbx`."""

    def __init__(
        self,
        name: str,
        address: str,
        pbx: tuple[str, int],
        extension: str,
        password: str,
        ns_path: str | None = None,
        steps: Steps | None = None,
    ):
        super().__init__(name, steps)
        self.address, self.pbx, self.extension = address, pbx, extension
        self._password = password
        self.ns_path = ns_path

    def call(self, to: str, ring_timeout: float = 8.0, hold: float = 0.5, sip_port: int = 5062) -> CallResult:
        """Place one call; answered calls are held `hold` seconds and hung up."""
        pbx = f"{self.pbx[0]}:{self.pbx[1]}"
        with self.step("call", [f"REGISTER {self.extension}@{pbx}", f"INVITE {to}@{pbx}"]):
            if self.dry_run:
                return CallResult("dry_run", to, pbx)
            argv = [
                sys.executable,
                "-m",
                "harness.drivers.caller",
                "--pbx",
                pbx,
                "--extension",
                self.extension,
            ]
            argv += ["--my-ip", self.address, "--sip-port", str(sip_port), "--to", to]
            argv += ["--ring-timeout", str(ring_timeout), "--hold", str(hold)]
            if self.ns_path:
                argv = ["nsenter", f"--net={self.ns_path}", "--", *argv]
            env = {**os.environ, PASSWORD_ENV: self._password}
            try:
                r = subprocess.run(
                    argv, capture_output=True, text=True, env=env, timeout=ring_timeout + hold + 20
                )
            except (OSError, subprocess.TimeoutExpired) as e:
                raise DeviceUnreachable(self.name, "call", e) from None
            lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
            if not lines:
                raise DeviceUnreachable(self.name, "call", f"exit {r.returncode}: {r.stderr.strip()[-300:]}")
            return CallResult(**json.loads(lines[-1]))


class RemoteCallerDriver(CallerDriver):
    """The test caller on a caller host reached over SSH (a physical lab, or the twin driven as one).

    `ssh` is the host's HostDriver (paramiko, host keys strictly checked). One exec channel runs the
    caller program to its end; its result and PID files live in the host's `workdir` and come back over
    SFTP, then are removed. A call that overruns is stopped (`kill PID`) and reported unreachable."""

    def __init__(
        self, name: str, address: str, pbx: tuple[str, int], extension: str, password: str, ssh: Any,
        command: str, workdir: str, steps: Steps | None = None,
    ) -> None:  # fmt: skip
        super().__init__(name, address, pbx, extension, password, None, steps)
        self.ssh, self.command, self.workdir = ssh, command, workdir.rstrip("/") or "/"
        self.grace = 20.0  # seconds past ring timeout and hold before an unfinished caller is stopped

    def call(self, to: str, ring_timeout: float = 8.0, hold: float = 0.5, sip_port: int = 5062) -> CallResult:
        pbx = f"{self.pbx[0]}:{self.pbx[1]}"
        tag = secrets.token_hex(6)
        out, pid = f"{self.workdir}/hil-call-{tag}.json", f"{self.workdir}/hil-call-{tag}.pid"
        args = ["--pbx", pbx, "--extension", self.extension, "--my-ip", self.address, "--sip-port",
                str(sip_port), "--to", to, "--ring-timeout", str(ring_timeout), "--hold", str(hold),
                "--out", out, "--pid-file", pid, "--password-stdin"]  # fmt: skip
        command = f"{self.command} {shlex.join(args)}"
        with self.step("call", [f"ssh {self.name}: {command}", f"sftp {self.name}: get {out}"]):
            if self.dry_run:
                return CallResult("dry_run", to, pbx)
            try:
                client = self.ssh.client
                chan = client.get_transport().open_session()
                chan.exec_command(command)
                chan.sendall((self._password + "\n").encode())
                chan.shutdown_write()
                finished = chan.status_event.wait(ring_timeout + hold + self.grace)
                code = chan.recv_exit_status() if finished else None
                err = (
                    chan.recv_stderr(4096).decode(errors="replace").strip()
                    if chan.recv_stderr_ready()
                    else ""
                )
                chan.close()
                sftp = client.open_sftp()
            except (OSError, EOFError) as e:
                raise DeviceUnreachable(self.name, "call", e) from None
            try:
                if not finished:
                    self._stop(sftp, pid)
                    raise DeviceUnreachable(self.name, "call", f"the caller did not finish; stopped ({pid})")
                try:
                    with sftp.open(out, "r") as f:
                        text = f.read().decode(errors="replace")
                except OSError as e:
                    raise DeviceError(
                        f"{self.name}: sftp {out}: {e} (caller exit {code}: {err[-300:]})"
                    ) from None
                lines = [ln for ln in text.splitlines() if ln.startswith("{")]
                if not lines:
                    raise DeviceError(
                        f"{self.name}: {out} holds no result (caller exit {code}: {err[-300:]})"
                    )
                return CallResult(**json.loads(lines[-1]))
            finally:
                for path in (out, pid):
                    try:
                        sftp.remove(path)
                    except OSError:
                        pass
                sftp.close()

    def _stop(self, sftp: Any, pid_file: str) -> None:
        """Stop an overrunning caller by its own PID (from its PID file), never by name."""
        try:
            with sftp.open(pid_file, "r") as f:
                pid = int(f.read().decode().strip())
        except (OSError, ValueError):
            return
        self.ssh.run(f"kill {pid}", action="caller_stop")


def caller_for(
    lab: Any, host: str, pbx: str, extension: str | None = None, steps: Steps | None = None
) -> CallerDriver:
    """A caller on `host` registering `extension` (default: the host's own, from the topology; its
    password from the lab's SIP secret) at `pbx`: in the host's namespace on the virtual lab, over SSH on
    a physical one."""
    h, p = lab.topology.device(host), lab.topology.device(pbx)
    extension = extension or getattr(h.spec, "extension", None)
    if not extension:
        raise ValueError(f"{lab.topology.file}: {h.path}.extension is needed for a test caller on {host}")
    target = (str(p.spec.address), p.spec.sip_port)
    if not lab.virtual:
        ssh = driver_for(lab, host, steps)
        command = getattr(h.spec, "caller_command", "python3 -m harness.drivers.caller")
        workdir = getattr(h.spec, "workdir", "/tmp")
        return RemoteCallerDriver(
            host, str(h.spec.address), target, extension, lab.sip_password(extension), ssh, command,
            workdir, steps,
        )  # fmt: skip
    return CallerDriver(
        host,
        str(h.spec.address),
        target,
        extension,
        lab.sip_password(extension),
        lab.ns_path(host),
        steps,
    )


# ---------------------------------------------------------------------------------- the subprocess side


def _headers(raw: bytes, name: str) -> list[str]:
    """A header's values as sipcore reads them (pyVoIP's own parse keeps only one of a repeated header)."""
    msg = parse_sip(raw)
    return msg.header_values(name) if msg is not None else []


def _run(args: argparse.Namespace) -> dict[str, Any]:
    importlib.import_module("pyVoIP.VoIP")  # first: pyVoIP's modules import each other in a cycle
    from pyVoIP import RTP
    from pyVoIP.SIP import SIPClient, SIPMessage, SIPMessageType
    from pyVoIP.VoIP import CallState, VoIPCall, VoIPPhone

    host, port = args.pbx.rsplit(":", 1)
    password = os.environ.get(PASSWORD_ENV, "")
    res: dict[str, Any] = {"outcome": "failed", "to": args.to, "pbx": args.pbx}
    state: dict[str, Any] = {}
    done = threading.Event()

    class Client(SIPClient):  # type: ignore[misc]
        """pyVoIP's client with the calling side completed (see the module docstring)."""

        def gen_call_id(self) -> str:
            # pyVoIP derives Call-IDs from a per-process counter: every caller process would reuse the
            # same ones, and a phone takes a reused Call-ID for a retransmission of an old call.
            return f"{secrets.token_hex(16)}@{self.myIP}"

        def invite(self, number: str, ms: Any, sendtype: Any) -> Any:
            call_id = self.gen_call_id()
            sess_id = self.sessID.next()
            branch = "z9hG4bK" + secrets.token_hex(10)
            inv = self.gen_invite(number, str(sess_id), ms, sendtype, branch, call_id)
            state.update(call_id=call_id, t0=time.monotonic(), number=number)
            with self.recvLock:
                self.out.sendto(inv.encode(), (self.server, self.port))
                deadline = time.monotonic() + 5.0
                while time.monotonic() < deadline:
                    if not select.select([self.s], [], [], 0.2)[0]:
                        continue
                    msg = SIPMessage(self.s.recv(8192))
                    if msg.type == SIPMessageType.MESSAGE or msg.headers.get("Call-ID") != call_id:
                        self.parse_message(msg)
                        continue
                    code = int(msg.status)
                    hdr = "Proxy-Authenticate" if code == 407 else "WWW-Authenticate"
                    offered = _headers(msg.raw, hdr) if code in (401, 407) else []
                    chal = parse_challenge(offered[0]) if offered else None  # sipcore.digest: one digest
                    if chal is not None and "auth" not in state:
                        self.out.sendto(self.gen_ack(msg).encode(), (self.server, self.port))
                        uri = f"sip:{number}@{self.server}"
                        auth = authorization(chal, "INVITE", uri, self.username, password)
                        state["auth"] = f"{'Proxy-' if code == 407 else ''}Authorization: {auth}\r\n"
                        branch = "z9hG4bK" + secrets.token_hex(10)
                        inv = self.gen_invite(number, str(sess_id), ms, sendtype, branch, call_id)
                        inv = inv.replace("\r\nContent-Length", f"\r\n{state['auth']}Content-Length", 1)
                        self.out.sendto(inv.encode(), (self.server, self.port))
                        continue
                    state["invite"] = inv
                    self.parse_message(msg)  # 100/180 recorded; a final one ends the call
                    break
            return SIPMessage(inv.encode()), call_id, sess_id

        def parse_message(self, msg: Any) -> None:
            if msg.type != SIPMessageType.MESSAGE and msg.headers.get("Call-ID") == state.get("call_id"):
                code, t = int(msg.status), time.monotonic() - state["t0"]
                method = msg.headers.get("CSeq", {}).get("method")
                if method == "INVITE" and code in (180, 183) and res.get("ringing_s") is None:
                    res["ringing_s"] = round(t, 4)
                elif method == "INVITE" and code == 200:
                    if res.get("answered_s") is None:
                        res["answered_s"] = round(t, 4)
                        state["ok"] = msg
                    self._ack_2xx(msg)
                    if self.callCallback is not None:
                        threading.Thread(target=self._media, args=(msg,), daemon=True).start()
                    done.set()
                    return
                elif method == "INVITE" and code >= 300:
                    res.update(status=code, reason=msg.status.phrase, ended_s=round(t, 4))
                    self.out.sendto(self.gen_ack(msg).encode(), (self.server, self.port))
                    done.set()
                    return
                elif method in ("BYE", "CANCEL"):
                    return
            super().parse_message(msg)

        def _media(self, msg: Any) -> None:
            try:
                self.callCallback(msg)  # pyVoIP: VoIPCall.answered -> RTP; its ACK is replaced below
                res["rtp"] = True
            except Exception:
                res["rtp"] = False

        def gen_ack(self, request: Any) -> str:
            if int(request.status) == 200:
                return self._in_dialog("ACK", request, int(request.headers["CSeq"]["check"]))
            # ACK of a negative final: hop by hop, same Via branch as the INVITE, the response's To tag
            head = state.get("invite", "").split("\r\n\r\n", 1)[0].split("\r\n")
            if not head or not head[0].startswith("INVITE"):
                return str(super().gen_ack(request))
            keep = [h for h in head[1:] if h.split(":", 1)[0].lower() in ("via", "from", "call-id")]
            lines = [head[0].replace("INVITE", "ACK", 1), *keep, f"To: {_headers(request.raw, 'To')[0]}"]
            lines += [f"CSeq: {request.headers['CSeq']['check']} ACK", "Max-Forwards: 70"]
            return "\r\n".join([*lines, "Content-Length: 0", "", ""])

        def _in_dialog(self, method: str, ok: Any, cseq: int) -> str:
            """ACK/BYE to the callee's Contact along the Record-Route set (loose routing)."""
            contact = re.sub(r"^.*<([^>]+)>.*$", r"\1", _headers(ok.raw, "Contact")[0])
            routes = [r for h in _headers(ok.raw, "Record-Route") for r in h.split(",")]
            frm = _headers(ok.raw, "From")[0]
            to = _headers(ok.raw, "To")[0]
            lines = [
                f"{method} {contact} SIP/2.0",
                f"Via: SIP/2.0/UDP {self.myIP}:{self.myPort};branch=z9hG4bK{secrets.token_hex(10)};rport",
                *[f"Route: {r.strip()}" for r in reversed(routes)],
                "Max-Forwards: 70",
                f"From: {frm}",
                f"To: {to}",
                f"Call-ID: {ok.headers['Call-ID']}",
                f"CSeq: {cseq} {method}",
            ]
            return "\r\n".join([*lines, "Content-Length: 0", "", ""])

        def _ack_2xx(self, ok: Any) -> None:
            self.out.sendto(self.gen_ack(ok).encode(), (self.server, self.port))

        def bye(self, request: Any) -> None:
            ok = state.get("ok")
            if ok is not None:
                cseq = int(ok.headers["CSeq"]["check"]) + 1
                self.out.sendto(self._in_dialog("BYE", ok, cseq).encode(), (self.server, self.port))

        def cancel(self) -> None:
            inv = state.get("invite", "")
            head = inv.split("\r\n\r\n", 1)[0].split("\r\n")
            keep = [h for h in head[1:] if h.split(":", 1)[0].lower() in ("via", "from", "to", "call-id")]
            cseq = re.search(r"(?im)^CSeq:\s*(\d+)", inv)
            line = head[0].replace("INVITE", "CANCEL", 1)
            msg = [line, *keep, f"CSeq: {cseq.group(1) if cseq else 1} CANCEL", "Max-Forwards: 70"]
            self.out.sendto(
                "\r\n".join([*msg, "Content-Length: 0", "", ""]).encode(), (self.server, self.port)
            )

    class Phone(VoIPPhone):  # type: ignore[misc]
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.sip = Client(
                self.server,
                self.port,
                self.username,
                self.password,
                phone=self,
                myIP=self.myIP,
                myPort=kw["sipPort"],
                callCallback=self.callback,
                fatalCallback=self.fatal,
            )

        def _callback_RESP_OK(self, request: Any) -> None:
            call = self.calls.get(request.headers["Call-ID"])
            if call is not None:
                call.answered(request)  # media; the ACK went out already, along the route set

    rtp_low = 20000 + (args.sip_port % 100) * 100
    phone = Phone(
        host,
        int(port),
        args.extension,
        password,
        myIP=args.my_ip,
        sipPort=args.sip_port,
        rtpPortLow=rtp_low,
        rtpPortHigh=rtp_low + 98,
    )
    t = time.monotonic()
    try:
        phone.start()
    except Exception as e:
        res.update(outcome="register_failed", reason=f"{type(e).__name__}: {e}")
        return res
    res["register_s"] = round(time.monotonic() - t, 4)
    try:
        port_ = phone.request_port()
        medias = {port_: {0: RTP.PayloadType.PCMU, 101: RTP.PayloadType.EVENT}}
        request, call_id, sess_id = phone.sip.invite(args.to, medias, RTP.TransmitType.SENDRECV)
        phone.calls[call_id] = VoIPCall(
            phone, CallState.DIALING, request, sess_id, phone.myIP, ms=medias, sendmode=phone.sendmode
        )
        if not done.is_set() and state.get("ok") is not None:
            done.set()
        if not done.wait(args.ring_timeout):
            phone.sip.cancel()
            done.wait(4.0)
            res.setdefault("status", None)
        if res.get("answered_s") is not None:
            time.sleep(args.hold)
            phone.sip.bye(None)
            res.update(outcome="answered", status=200, ended_s=round(time.monotonic() - state["t0"], 4))
            time.sleep(0.2)
        elif res.get("status") == 486 or res.get("status") == 600:
            res["outcome"] = "busy"
        elif res.get("status") == 487 or res.get("status") is None:
            res["outcome"] = "no_answer"
            res.setdefault("reason", "no answer within the ring timeout")
        else:
            res["outcome"] = "failed"
    finally:
        try:
            for call in list(phone.calls.values()):
                for rtp in call.RTPClients:
                    rtp.stop()
            phone.sip.stop()
        except Exception:
            pass
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.drivers.caller", description=__doc__.split("\n")[0])
    ap.add_argument("--pbx", required=True, help="HOST:PORT of the PBX to register at")
    ap.add_argument("--extension", required=True, help="the caller's own extension (password from env)")
    ap.add_argument("--my-ip", required=True, help="the caller host's address")
    ap.add_argument("--sip-port", type=int, default=5062)
    ap.add_argument("--to", required=True, help="extension to call")
    ap.add_argument("--ring-timeout", type=float, default=8.0)
    ap.add_argument("--hold", type=float, default=0.5)
    ap.add_argument("--out", help="also write the result line to this file (fetched over SFTP)")
    ap.add_argument("--pid-file", help="write this process's PID here (a remote stop kills it by PID)")
    ap.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    args = ap.parse_args(argv)
    if args.password_stdin:
        os.environ[PASSWORD_ENV] = sys.stdin.readline().rstrip("\n")
    if args.pid_file:
        with open(args.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")
    res = _run(args)
    line = json.dumps(res)
    if args.out:
        tmp = f"{args.out}.tmp"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, args.out)
    print(line, flush=True)
    os._exit(0)  # pyVoIP leaves non-daemon timer threads behind; the result is out


if __name__ == "__main__":
    sys.exit(main())
