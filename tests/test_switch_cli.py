"""The emulated switch CLI over real SSH, driven by the real netmiko drivers (cisco_ios, huawei).

The port backend is an in-memory fake: the unit under test is the CLI and its transport.
"""

from __future__ import annotations

import ast
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from netmiko import ConnectHandler
from netmiko.exceptions import ConfigInvalidException, NetmikoAuthenticationException
from netmiko.utilities import get_structured_data_textfsm

import virtual.switch_cli
from virtual.sshserver import SSHServer, load_or_create_host_key
from virtual.switch_cli import CiscoIOS, HuaweiVRP, SwitchCLI, SwitchConfig, switch_session_factory

CISCO_PORTS = [f"Gi0/{i}" for i in range(1, 5)]
HUAWEI_PORTS = [f"GigabitEthernet0/0/{i}" for i in range(1, 5)]
USER, PASSWORD, SECRET = "admin", "lab-pass", "lab-enable"


class FakePorts:
    """In-memory PortBackend that also records SPAN (MirrorBackend)."""

    def __init__(self, ports: list[str]) -> None:
        self.admin = {p: True for p in ports}
        self.carrier = {p: True for p in ports}
        self.mirrors: dict[int, tuple[dict[str, str], str | None]] = {}
        self.lock = threading.Lock()

    def set_admin(self, port: str, up: bool) -> None:
        with self.lock:
            self.admin[port] = up

    def state(self, port: str) -> tuple[bool, bool]:
        with self.lock:
            return self.admin[port], self.carrier[port]

    def description(self, port: str) -> str:
        return "to sha-pbx1" if port.endswith("1") else ""

    def set_mirror(self, session: int, sources: dict[str, str], destination: str | None) -> None:
        self.mirrors[session] = (sources, destination)


@pytest.fixture(scope="module")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> paramiko.PKey:
    return load_or_create_host_key(tmp_path_factory.mktemp("keys") / "ssh_host_ed25519_key")


class Switch:
    def __init__(self, vendor: str, host_key: paramiko.PKey) -> None:
        ports = CISCO_PORTS if vendor == "cisco_ios" else HUAWEI_PORTS
        self.vendor = vendor
        self.backend = FakePorts(ports)
        self.config = SwitchConfig()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self.port = sock.getsockname()[1]
        factory = switch_session_factory(
            "sw1", vendor, ports, self.backend, enable_secret=SECRET, config=self.config
        )
        self.server = SSHServer(sock, host_key, {USER: PASSWORD}, factory)
        self.server.start()

    def connect(self, password: str = PASSWORD) -> object:
        return ConnectHandler(
            device_type=self.vendor,
            host="127.0.0.1",
            port=self.port,
            username=USER,
            password=password,
            secret=SECRET,
            conn_timeout=5,
        )


@pytest.fixture
def cisco(host_key: paramiko.PKey) -> Iterator[Switch]:
    sw = Switch("cisco_ios", host_key)
    yield sw
    sw.server.close()


@pytest.fixture
def huawei(host_key: paramiko.PKey) -> Iterator[Switch]:
    sw = Switch("huawei", host_key)
    yield sw
    sw.server.close()


def test_host_key_is_reused_and_private(tmp_path) -> None:
    path = tmp_path / "k"
    first = load_or_create_host_key(path)
    assert load_or_create_host_key(path).get_fingerprint() == first.get_fingerprint()
    assert path.stat().st_mode & 0o077 == 0


def test_cisco_with_netmiko(cisco: Switch) -> None:
    t0 = time.monotonic()
    conn = cisco.connect()
    version = conn.send_command("show version", use_textfsm=True)
    connect_and_command = time.monotonic() - t0
    assert connect_and_command < 2.0, f"netmiko connect + command took {connect_and_command:.2f} s"
    assert version[0]["hostname"] == "sw1"
    assert version[0]["hardware"] == ["WS-C2960X-48TS-L"] and version[0]["version"] == "15.2(7)E8"
    assert conn.find_prompt() == "sw1>"

    conn.enable()
    assert conn.find_prompt() == "sw1#"
    conn.send_config_set(["interface Gi0/3", "shutdown", "description uplink to ntg"])
    assert cisco.backend.admin["Gi0/3"] is False
    rows = {r["port"]: r for r in conn.send_command("show interfaces status", use_textfsm=True)}
    assert rows["Gi0/3"]["status"] == "disabled" and rows["Gi0/3"]["name"] == "uplink to ntg"
    assert rows["Gi0/1"]["status"] == "connected"
    detail = conn.send_command("show interfaces GigabitEthernet0/3")
    assert "GigabitEthernet0/3 is administratively down, line protocol is down (disabled)" in detail

    conn.send_config_set(["interface gi 0/3", "no shutdown"])
    assert cisco.backend.admin["Gi0/3"] is True
    assert "GigabitEthernet0/3 is up, line protocol is up" in conn.send_command("sh int gi0/3")
    cisco.backend.carrier["Gi0/4"] = False  # the far end went away
    assert "is down, line protocol is down (notconnect)" in conn.send_command("show interfaces Gi0/4")

    assert "% Invalid input detected at '^' marker." in conn.send_command("show bogus")
    with pytest.raises(ConfigInvalidException):
        conn.send_config_set(["interface Gi0/3", "frobnicate"], error_pattern=r"% Invalid")
    conn.exit_config_mode()  # netmiko raised mid-set, still in config mode
    assert conn.find_prompt() == "sw1#"

    conn.send_config_set(
        ["monitor session 1 source interface Gi0/1 rx", "monitor session 1 destination interface Gi0/2"]
    )
    assert cisco.backend.mirrors[1] == ({"Gi0/1": "rx"}, "Gi0/2")
    span = conn.send_command("show monitor session all")
    assert "RX Only              : Gi0/1" in span and "Destination Ports        : Gi0/2" in span
    running = conn.send_command("show running-config interface Gi0/3")
    assert "interface GigabitEthernet0/3" in running and "description uplink to ntg" in running

    assert "[OK]" in conn.save_config()
    assert cisco.config.saves == 1
    conn.disconnect()


def test_huawei_with_netmiko(huawei: Switch) -> None:
    t0 = time.monotonic()
    conn = huawei.connect()
    raw = conn.send_command("display version")
    connect_and_command = time.monotonic() - t0
    assert connect_and_command < 2.0, f"netmiko connect + command took {connect_and_command:.2f} s"
    version = get_structured_data_textfsm(raw, platform="huawei_vrp", command="display version")
    assert version[0]["model"].startswith("S5720-28X-SI-AC") and version[0]["vrp_version"] == "5.170"
    assert conn.find_prompt() == "<sw1>"

    # netmiko's HuaweiBase.check_config_mode waits 2 s per call (read_channel_timing), as on a real
    # VRP; staying in system-view between the two config sets saves two of those calls.
    conn.send_config_set(
        [
            "interface GigabitEthernet0/0/3",
            "shutdown",
            "quit",
            "observe-port 1 interface GigabitEthernet0/0/4",
        ],
        exit_config_mode=False,
    )
    assert huawei.backend.admin["GigabitEthernet0/0/3"] is False
    brief = conn.send_command("display interface brief")
    rows = {
        r["interface"]: r for r in get_structured_data_textfsm(brief, "huawei_vrp", "display interface brief")
    }
    assert (
        rows["GigabitEthernet0/0/3"]["phy"] == "*down" and rows["GigabitEthernet0/0/3"]["protocol"] == "down"
    )
    assert rows["GigabitEthernet0/0/1"]["phy"] == "up"

    conn.send_config_set(["interface g0/0/3", "undo shutdown", "port-mirroring to observe-port 1 both"])
    assert conn.find_prompt() == "<sw1>"
    assert huawei.backend.admin["GigabitEthernet0/0/3"] is True
    assert "GigabitEthernet0/0/3 current state : UP" in conn.send_command("display interface GE0/0/3")
    assert huawei.backend.mirrors[1] == ({"GigabitEthernet0/0/3": "both"}, "GigabitEthernet0/0/4")

    assert "Error: Unrecognized command found at '^' position." in conn.send_command("display bogus")
    assert "Save the configuration successfully" in conn.save_config()
    assert huawei.config.saves == 1
    conn.disconnect()


@pytest.mark.parametrize("vendor", ["cisco_ios", "huawei"])
def test_wrong_password_is_refused(vendor: str, host_key: paramiko.PKey) -> None:
    sw = Switch(vendor, host_key)
    try:
        with pytest.raises(NetmikoAuthenticationException):
            sw.connect(password="wrong")
    finally:
        sw.server.close()


def test_misbehaving_clients_do_not_disturb_others(cisco: Switch) -> None:
    silent = socket.create_connection(("127.0.0.1", cisco.port))
    garbage = socket.create_connection(("127.0.0.1", cisco.port))
    garbage.sendall(b"GET / HTTP/1.0\r\n\r\n" * 10)
    conn = cisco.connect()
    assert conn.send_command("show interfaces status").count("connected") == 4
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", cisco.port, USER, PASSWORD, look_for_keys=False, allow_agent=False)
    client.get_transport().sock.close()  # vanish without a goodbye
    assert "sw1>" in conn.find_prompt()
    conn.disconnect()
    silent.close()
    garbage.close()


def test_client_that_never_authenticates_is_dropped(host_key: paramiko.PKey) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    server = SSHServer(sock, host_key, {USER: PASSWORD}, lambda user: None, login_grace=0.3)
    server.start()
    try:
        transport = paramiko.Transport(sock.getsockname())
        transport.start_client(timeout=5)  # key exchange, then nothing
        deadline = time.monotonic() + 3
        while transport.is_active() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not transport.is_active()
        transport.close()
    finally:
        server.close()


def test_exec_and_keyboard_interactive(cisco: Switch) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", cisco.port, USER, PASSWORD, look_for_keys=False, allow_agent=False)
    _, out, _ = client.exec_command("show interfaces status")
    assert out.channel.recv_exit_status() == 0 and "Gi0/4" in out.read().decode()
    _, out, _ = client.exec_command("show nonsense")
    assert out.channel.recv_exit_status() == 1 and "% Invalid input" in out.read().decode()
    client.close()

    transport = paramiko.Transport(("127.0.0.1", cisco.port))
    transport.start_client(timeout=5)
    assert transport.auth_interactive(USER, lambda title, instr, prompts: [PASSWORD] * len(prompts)) == []
    assert transport.is_authenticated()
    transport.close()


# -- the CLI state machine without a transport ---------------------------------------------------


def cli(vendor: str, ports: list[str] | None = None, **kw: object) -> tuple[SwitchCLI, FakePorts]:
    ports = ports or (CISCO_PORTS if vendor == "cisco_ios" else HUAWEI_PORTS)
    backend = FakePorts(ports)
    return SwitchCLI("sw1", vendor, ports, backend, enable_secret=SECRET, **kw), backend


def test_cisco_modes_abbreviations_and_errors() -> None:
    c, backend = cli("cisco_ios")
    assert c.prompt() == "sw1>"
    assert c.feed("conf t").startswith(" " * len("sw1>") + "^\r\n% Invalid input")  # not in user exec
    assert c.feed("en") == "Password: " and not c.echo
    assert c.feed("nope") == "Password: "
    assert c.feed(SECRET) == "sw1#" and c.echo
    assert c.feed("conf t").endswith("sw1(config)#")
    for spelling in ("GigabitEthernet0/2", "gi0/2", "Gi 0/2", "g0/2"):
        assert c.feed(f"interface {spelling}") == "sw1(config-if)#"
        assert c.interface is not None and c.interface.name == "Gi0/2"
    assert c.feed("shut") == "sw1(config-if)#" and backend.admin["Gi0/2"] is False
    assert c.feed("no sh") == "sw1(config-if)#" and backend.admin["Gi0/2"] is True
    caret = " " * len("sw1(config-if)#interface ") + "^"
    assert (
        c.feed("interface Gi0/9")
        == caret + "\r\n% Invalid input detected at '^' marker.\r\n\r\nsw1(config-if)#"
    )
    assert c.feed("monitor session 2 destination interface Gi0/4") == "sw1(config)#"  # parent-mode fallback
    assert "Building configuration" in c.feed("do show running-config")
    assert c.feed("end") == "sw1#"
    assert c.feed("show") == "% Incomplete command.\r\n\r\nsw1#"
    assert c.feed("copy running-config startup-config") == "Destination filename [startup-config]? "
    assert c.feed("") == "Building configuration...\r\n[OK]\r\nsw1#"
    assert c.interrupt("\x03") == "^C\r\nsw1#"
    assert c.feed("exit") == "" and c.closed


def test_backend_failure_is_reported_not_fatal() -> None:
    c, backend = cli("cisco_ios")

    def broken(port: str, up: bool) -> None:
        raise OSError(f"veth of {port} is gone")

    backend.set_admin = broken  # type: ignore[method-assign]
    c.feed("enable")
    c.feed(SECRET)
    c.feed("configure terminal")
    c.feed("interface Gi0/1")
    assert c.feed("shutdown") == "% Error: veth of Gi0/1 is gone\r\n\r\nsw1(config-if)#"
    assert not c.closed


def test_pager_until_terminal_length_zero() -> None:
    ports = [f"Gi1/0/{i}" for i in range(1, 41)]
    c, _ = cli("cisco_ios", ports)
    first = c.feed("show interfaces status")
    assert first.endswith(" --More-- ") and c.more_pending
    rest = c.feed_key(" ")
    assert "Gi1/0/40" in rest and rest.endswith("sw1>") and not c.more_pending
    c.feed("show interfaces status")
    assert c.feed_key("q").endswith("sw1>") and not c.more_pending
    c.feed("terminal length 0")
    assert c.feed("show interfaces status").endswith("sw1>")


def test_huawei_views_and_errors() -> None:
    c, backend = cli("huawei")
    assert c.prompt() == "<sw1>"
    assert "Info:" in c.feed("screen-length 0 temporary")
    assert c.feed("sys").endswith("[sw1]")
    assert c.feed("int GE0/0/2") == "[sw1-GigabitEthernet0/0/2]"
    assert (
        c.feed("shutdown") == "[sw1-GigabitEthernet0/0/2]" and backend.admin["GigabitEthernet0/0/2"] is False
    )
    assert "*down" in c.feed("display interface brief")
    assert (
        c.feed("undo shut") == "[sw1-GigabitEthernet0/0/2]" and backend.admin["GigabitEthernet0/0/2"] is True
    )
    assert "Error: The observe port does not exist." in c.feed("port-mirroring to observe-port 1 inbound")
    assert c.feed("interface GigabitEthernet 0/0/9").endswith(
        "Error: Wrong parameter found at '^' position.\r\n" + c.prompt()
    )
    assert "Error: Unrecognized command found at '^' position." in c.feed("frobnicate")
    assert c.feed("quit") == "[sw1]"
    assert c.feed("return") == "<sw1>"
    assert c.feed("save").endswith("Continue? [Y/N]:")
    assert "successfully" in c.feed("y")
    assert c.feed("quit") == "" and c.closed


def test_vendor_picks_the_dialect() -> None:
    assert type(cli("cisco_ios")[0]) is CiscoIOS
    assert type(cli("huawei")[0]) is HuaweiVRP
    with pytest.raises(ValueError, match="vendor must be one of"):
        cli("juniper", ports=CISCO_PORTS)
    with pytest.raises(ValueError, match="not 'huawei'"):
        CiscoIOS("sw1", "huawei", HUAWEI_PORTS, FakePorts(HUAWEI_PORTS))


def test_switch_cli_never_imports_the_drivers() -> None:
    """The twin is written from the vendors' behaviour: a driver must never be tested against a mirror of
    its own command code, so the switch CLI imports nothing of harness/ at all (local imports included)."""
    package = Path(virtual.switch_cli.__file__).parent
    imported = set()
    for f in package.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
    assert "virtual.terminal" in imported
    assert not {m for m in imported if m.split(".")[0] in ("harness", "fixtures", "scenarios")}
