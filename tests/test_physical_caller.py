"""The test caller on a caller host, as a physical lab has it: started over SSH (the password on stdin),
its result fetched over SFTP and removed, an overrunning caller stopped by its PID, host keys strict.

A real SSH server (virtual/sshserver.py, the caller host endpoint the twin serves) on loopback; the
caller program is a stand-in that speaks the program's interface (--out, --pid-file, --password-stdin),
so no PBX is needed. The real program behind that interface runs in the lab tests.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

import harness.drivers.caller as caller_mod
from harness.drivers.base import DeviceError, DeviceUnreachable
from harness.drivers.caller import RemoteCallerDriver
from harness.drivers.caller import main as caller_main
from harness.drivers.host import HostAccess, HostDriver
from virtual.sshserver import SSHServer, caller_host_factory, load_or_create_host_key

FAKE = r"""
import argparse, json, os, sys, time
ap = argparse.ArgumentParser()
for opt in ("--pbx", "--extension", "--my-ip", "--sip-port", "--to", "--ring-timeout", "--hold", "--out",
            "--pid-file"):
    ap.add_argument(opt)
ap.add_argument("--password-stdin", action="store_true")
a = ap.parse_args()
password = sys.stdin.readline().rstrip("\n")
open(a.pid_file, "w").write(f"{os.getpid()}\n")
open(os.path.join(os.path.dirname(sys.argv[0]), "started.log"), "a").write(f"{os.getpid()}\n")
if a.to == "slow":
    time.sleep(60)
res = {"outcome": "answered", "to": a.to, "pbx": a.pbx, "status": 200, "reason": " ".join(sys.argv),
       "rtp": password == "sip-password-19091"}
open(a.out, "w").write(json.dumps(res) + "\n")
print(json.dumps(res))
"""


class _Shell:
    """The host's own CLI for commands that are not the caller's."""

    def run(self, command: str) -> tuple[int, str, str]:
        return (0, "ok\n", "") if command == "true" else (127, "", f"{command}: command not found\n")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[dict[str, Any]]:
    root = tmp_path / "caller-root"
    root.mkdir()
    fake = tmp_path / "fake_caller.py"
    fake.write_text(FAKE)
    key = load_or_create_host_key(tmp_path / "host_key")
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    port = lsock.getsockname()[1]
    factory = caller_host_factory(
        lambda user: _Shell(), "hil-caller", root, [], program_argv=[sys.executable, str(fake)]
    )
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {key.get_name()} {key.get_base64()}\n")
    with SSHServer(lsock, key, {"labops": "host-pw"}, factory, name="sha-caller1", sftp_root=root):
        yield {"root": root, "port": port, "known": known, "tmp": tmp_path}


def _caller(host: dict[str, Any], known: Path | None = None) -> RemoteCallerDriver:
    access = HostAccess(
        "127.0.0.1", "labops", "host-pw", port=host["port"], known_hosts=known or host["known"]
    )
    ssh = HostDriver("sha-caller1", access)
    return RemoteCallerDriver(
        "sha-caller1", "198.18.1.90", ("198.18.1.10", 5060), "19091", "sip-password-19091", ssh,
        "hil-caller", "/tmp",
    )  # fmt: skip


def test_a_call_is_started_over_ssh_and_its_result_fetched_over_sftp(host: dict[str, Any]) -> None:
    caller = _caller(host)
    res = caller.call("10001", ring_timeout=1.0, hold=0.1)
    assert res.answered and res.to == "10001" and res.pbx == "198.18.1.10:5060"
    assert res.rtp, "the password reached the caller on its stdin"
    assert "sip-password-19091" not in res.reason, "never on a command line"
    assert "caller-root/tmp/hil-call-" in res.reason and "--password-stdin" in res.reason  # the host's /tmp
    assert not any(p.is_file() for p in Path(host["root"]).rglob("*")), "result and PID files removed"
    caller.ssh.close()


def test_an_overrunning_caller_is_stopped_by_its_pid(
    host: dict[str, Any], eventually: Callable[..., bool]
) -> None:
    caller = _caller(host)
    caller.grace = 0.5
    with pytest.raises(DeviceUnreachable, match="did not finish; stopped"):
        caller.call("slow", ring_timeout=0.5, hold=0.0)
    caller.ssh.close()
    assert not list(Path(host["root"]).rglob("*.pid")), "the PID file is removed with the result"
    pid = int((Path(host["tmp"]) / "started.log").read_text().split()[-1])
    assert eventually(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid)), f"caller {pid} still runs"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_an_unknown_host_key_is_refused(host: dict[str, Any]) -> None:
    empty = Path(host["tmp"]) / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(DeviceError, match="host key of 127.0.0.1 is not in"):
        _caller(host, empty).call("10001", ring_timeout=1.0, hold=0.1)


def test_the_program_writes_its_pid_and_result_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real program's side of the interface: password from stdin, PID and result files."""
    seen: dict[str, Any] = {}

    def fake_run(args: Any) -> dict[str, Any]:
        seen["password"] = os.environ.get("HIL_CALLER_PASSWORD")
        return {"outcome": "busy", "to": args.to, "pbx": args.pbx, "status": 486}

    monkeypatch.setattr(caller_mod, "_run", fake_run)
    monkeypatch.setattr(caller_mod.os, "_exit", lambda code: None)
    monkeypatch.setattr(sys, "stdin", _Lines("s3cret\n"))
    out, pid = tmp_path / "r.json", tmp_path / "r.pid"
    args = ["--pbx", "198.18.1.10:5060", "--extension", "19091", "--my-ip", "198.18.1.90", "--to", "10001"]
    caller_main([*args, "--out", str(out), "--pid-file", str(pid), "--password-stdin"])
    assert seen["password"] == "s3cret"
    assert pid.read_text().strip() == str(os.getpid())
    assert '"outcome": "busy"' in out.read_text()


class _Lines:
    def __init__(self, text: str) -> None:
        self.text = text

    def readline(self) -> str:
        return self.text


def test_sftp_stays_inside_the_host_root(host: dict[str, Any]) -> None:
    t = paramiko.Transport(("127.0.0.1", host["port"]))
    try:
        t.connect(username="labops", password="host-pw")
        sftp = paramiko.SFTPClient.from_transport(t)
        assert sftp is not None
        with pytest.raises(OSError):
            sftp.open("/../../etc/hostname").read()
        with pytest.raises(OSError):
            sftp.open("/tmp/x", "w")
    finally:
        t.close()
