"""The emulated lab host over real SSH: systemctl/journalctl on real processes, via paramiko and netmiko."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from netmiko import ConnectHandler

from virtual.host_cli import HostCLI, host_session_factory
from virtual.services import Service, ServiceSupervisor, process_state
from virtual.sshserver import SSHServer, load_or_create_host_key

USER, PASSWORD = "labops", "host-pass"


def alive(pid: int) -> bool:
    """True while /proc/PID exists at all (a zombie counts: it must have been reaped)."""
    return os.path.exists(f"/proc/{pid}")


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                members.append(int(entry))
    return members


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[ServiceSupervisor]:
    sup = ServiceSupervisor(
        [
            Service("pbx", ["sleep", "1000"], tmp_path / "pbx.log", description="lab PBX"),
            Service(
                "cti",
                ["sh", "-c", 'for i in 1 2 3 4 5; do echo "cti line $i"; done; exec sleep 1000'],
                tmp_path / "cti.log",
                ready=lambda: (tmp_path / "cti.log").read_text().count("\n") >= 5,
            ),
            Service(
                "stubborn",
                ["sh", "-c", "trap '' TERM; exec sleep 1000"],
                tmp_path / "s.log",
                stop_timeout=0.3,
            ),
            Service("forker", ["sh", "-c", "sleep 1001 & exec sleep 1000"], tmp_path / "f.log"),
            Service("broken", ["/nonexistent/binary"], tmp_path / "b.log"),
        ]
    )
    yield sup
    sup.close()


@pytest.fixture
def ssh(supervisor: ServiceSupervisor, tmp_path: Path) -> Iterator[paramiko.SSHClient]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    key = load_or_create_host_key(tmp_path / "host_key")
    server = SSHServer(sock, key, {USER: PASSWORD}, host_session_factory("sha-pbx1", supervisor))
    server.start()
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", sock.getsockname()[1], USER, PASSWORD, look_for_keys=False, allow_agent=False)
    client.port = sock.getsockname()[1]  # type: ignore[attr-defined]
    yield client
    client.close()
    server.close()


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    _, out, err = client.exec_command(command, timeout=10)
    code = out.channel.recv_exit_status()
    return code, out.read().decode(), err.read().decode()


def test_service_life_cycle_over_exec(ssh: paramiko.SSHClient, supervisor: ServiceSupervisor) -> None:
    assert run(ssh, "systemctl is-active pbx") == (3, "inactive\n", "")
    assert run(ssh, "sudo systemctl start pbx.service")[0] == 0
    assert run(ssh, "systemctl is-active pbx") == (0, "active\n", "")
    code, out, _ = run(ssh, "systemctl show -p MainPID --value pbx")
    pid = int(out)
    assert code == 0 and pid > 0 and Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x001000\x00"

    assert run(ssh, "systemctl kill -s SIGSTOP pbx")[0] == 0
    assert supervisor.status("pbx").state == "paused"
    assert run(ssh, f"ps -o stat= -p {pid}") == (0, "T\n", "")
    code, out, _ = run(ssh, "systemctl status pbx")
    assert code == 0 and "Active: active (running)" in out and f"Main PID: {pid} (sleep)" in out
    assert run(ssh, "systemctl kill -s CONT pbx")[0] == 0
    assert supervisor.status("pbx").state == "active" and process_state(pid) in ("R", "S")

    assert run(ssh, "systemctl stop pbx")[0] == 0
    assert not alive(pid)
    assert run(ssh, "systemctl is-active pbx") == (3, "inactive\n", "")
    assert run(ssh, "systemctl show -p MainPID --value pbx") == (0, "0\n", "")

    assert run(ssh, "systemctl start pbx && systemctl is-active pbx") == (0, "active\n", "")
    new_pid = supervisor.main_pid("pbx")
    assert new_pid not in (0, pid)
    assert run(ssh, "systemctl kill -s 9 pbx")[0] == 0
    assert run(ssh, "systemctl is-active pbx") == (3, "failed\n", "")
    assert not alive(new_pid)  # killed and reaped: no zombie left
    code, out, _ = run(ssh, "systemctl status pbx")
    assert code == 3 and "Active: failed (Result: signal)" in out and "code=killed, signal=KILL" in out
    assert run(ssh, "systemctl is-failed pbx") == (0, "failed\n", "")


def test_signal_spellings_and_systemd_errors(ssh: paramiko.SSHClient, supervisor: ServiceSupervisor) -> None:
    for spelling in ("SIGKILL", "KILL", "9", "kill"):
        run(ssh, "systemctl start pbx")
        pid = supervisor.main_pid("pbx")
        assert run(ssh, f"systemctl kill --signal={spelling} pbx")[0] == 0
        assert not alive(pid)
    assert run(ssh, "systemctl status nosuch") == (4, "", "Unit nosuch.service could not be found.\n")
    assert run(ssh, "systemctl start nosuch") == (
        5,
        "",
        "Failed to start nosuch.service: Unit nosuch.service not found.\n",
    )
    assert run(ssh, "systemctl stop nosuch")[0] == 5
    assert run(ssh, "systemctl is-active nosuch") == (3, "inactive\n", "")
    code, _, err = run(ssh, "systemctl start broken")
    assert code == 1 and err.startswith("Job for broken.service failed")
    assert run(ssh, "systemctl is-active broken") == (3, "failed\n", "")
    assert run(ssh, "frobnicate --now") == (127, "", "bash: frobnicate: command not found\n")


def test_stop_escalates_to_sigkill_and_clears_the_process_group(
    ssh: paramiko.SSHClient, supervisor: ServiceSupervisor
) -> None:
    supervisor.start("stubborn")
    pid = supervisor.main_pid("stubborn")
    # sh has set SIGTERM to ignored once it has exec'd sleep (the trap comes first)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/cmdline").read_bytes() != b"sleep\x001000\x00" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x001000\x00"
    t0 = time.monotonic()
    assert run(ssh, "systemctl stop stubborn")[0] == 0
    assert 0.25 < time.monotonic() - t0 < 2.0
    assert not alive(pid)
    assert (
        supervisor.status("stubborn").state == "failed" and supervisor.status("stubborn").result == "timeout"
    )

    supervisor.start("forker")
    pid = supervisor.main_pid("forker")
    deadline = time.monotonic() + 10
    while len(group_members(pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(group_members(pid)) == 2  # sleep 1000 (main) and its background sleep 1001
    supervisor.kill("forker", signal.SIGKILL)
    # The leftover died with the main process, like a cgroup kill (as an orphan it may linger as a
    # zombie until init, the keeper in the lab, reaps it).
    deadline = time.monotonic() + 10
    while any(process_state(p) not in ("", "Z") for p in group_members(pid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [p for p in group_members(pid) if process_state(p) not in ("", "Z")] == []


def test_journal_cat_and_ready(
    ssh: paramiko.SSHClient, supervisor: ServiceSupervisor, tmp_path: Path
) -> None:
    assert run(ssh, "systemctl start cti")[0] == 0  # returns only once ready() saw all five lines
    assert run(ssh, "journalctl -u cti -n 2 --no-pager") == (0, "cti line 4\ncti line 5\n", "")
    assert run(ssh, "journalctl -u cti.service --lines=1 -o cat")[1] == "cti line 5\n"
    assert run(ssh, "journalctl -u pbx -n 5 --no-pager") == (0, "-- No entries --\n", "")
    assert run(ssh, f"cat {tmp_path / 'cti.log'}")[1].startswith("cti line 1\n")
    assert run(ssh, f"tail -n 1 {tmp_path / 'cti.log'}")[1] == "cti line 5\n"
    assert run(ssh, "cat /etc/shadow") == (1, "", "cat: /etc/shadow: No such file or directory\n")
    assert run(ssh, "hostname; uname -n; echo one two; true") == (0, "sha-pbx1\nsha-pbx1\none two\n", "")
    assert run(ssh, "uname -a")[1].startswith("Linux sha-pbx1 ")
    assert run(ssh, "false || echo recovered")[1] == "recovered\n"


def test_interactive_shell_with_netmiko(ssh: paramiko.SSHClient, supervisor: ServiceSupervisor) -> None:
    conn = ConnectHandler(
        device_type="linux", host="127.0.0.1", port=ssh.port, username=USER, password=PASSWORD, conn_timeout=5
    )
    assert conn.find_prompt() == f"{USER}@sha-pbx1:~$"
    conn.send_command("systemctl start pbx")
    assert conn.send_command("systemctl is-active pbx").strip() == "active"
    assert conn.send_command("systemctl show -p MainPID --value pbx").strip() == str(
        supervisor.main_pid("pbx")
    )
    conn.disconnect()


def test_host_cli_without_transport(supervisor: ServiceSupervisor) -> None:
    cli = HostCLI("sha-cti1", supervisor, username="root")
    assert cli.prompt() == "root@sha-cti1:~# "
    assert cli.feed("systemctl is-active pbx") == "inactive\r\nroot@sha-cti1:~# "
    assert cli.run("echo a > /tmp/x")[0] == 2  # redirections are refused, not faked
    assert cli.feed("exit") == "logout\r\n" and cli.closed


def test_before_start_runs_at_every_start(tmp_path: Path) -> None:
    """``before_start`` runs before each start, restarts included (a PBX renders a new boot id there)."""
    starts: list[int] = []
    sup = ServiceSupervisor(
        [Service("pbx", ["sleep", "1000"], tmp_path / "p.log", before_start=lambda: starts.append(1))]
    )
    try:
        sup.start("pbx")
        sup.stop("pbx")
        sup.start("pbx")
        assert len(starts) == 2
    finally:
        sup.close()
