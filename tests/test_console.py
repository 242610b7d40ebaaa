"""The emulated serial console: a real pty that pyserial opens, serving the switch CLI."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import pytest
import serial
from netmiko import ConnectHandler

from virtual.console import PtyConsole
from virtual.switch_cli import switch_session_factory

PORTS = [f"Gi0/{i}" for i in range(1, 5)]


class FakePorts:
    def __init__(self, ports: list[str]) -> None:
        self.admin = {p: True for p in ports}

    def set_admin(self, port: str, up: bool) -> None:
        self.admin[port] = up

    def state(self, port: str) -> tuple[bool, bool]:
        return self.admin[port], self.admin[port]

    def description(self, port: str) -> str:
        return ""


def expect(ser: serial.Serial, pattern: bytes, timeout: float = 10.0) -> bytes:
    """Read until the regex matches the end of what arrived, like a console driver does."""
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        buf += ser.read(ser.in_waiting or 1)
        if re.search(pattern, buf):
            return buf
    raise AssertionError(f"{pattern!r} not seen; got {buf!r}")


@pytest.fixture
def backend() -> FakePorts:
    return FakePorts(PORTS)


@pytest.fixture
def console(backend: FakePorts) -> Iterator[PtyConsole]:
    con = PtyConsole(
        switch_session_factory("sw1", "cisco_ios", PORTS, backend, enable_secret="en"), hostname="sw1"
    )
    yield con
    con.close()


def test_pyserial_drives_the_switch(console: PtyConsole, backend: FakePorts) -> None:
    assert console.path.startswith("/dev/pts/")
    ser = serial.Serial(console.path, baudrate=9600, timeout=0.05)
    ser.write(b"\r")
    expect(ser, rb"\r\nsw1>$")
    ser.write(b"enable\r")
    expect(ser, rb"Password: $")
    ser.write(b"en\r")
    out = expect(ser, rb"sw1#$")
    assert b"en\r\n" not in out  # the secret is not echoed
    ser.write(b"terminal length 0\rconf t\rinterface gi0/3\rshutdown\rend\r")
    expect(ser, rb"sw1\(config-if\)#end\r\nsw1#$")
    assert backend.admin["Gi0/3"] is False
    ser.write(b"show interfaces status\r")
    out = expect(ser, rb"Gi0/4.*\r\nsw1#$")
    assert re.search(rb"Gi0/3\s+disabled", out) and re.search(rb"Gi0/1\s+connected", out)
    ser.write(b"shw\x7f\x7fhow version\r")  # backspace editing, as a human types
    assert b"Cisco IOS Software" in expect(ser, rb"Configuration register is 0xF\r\n\r\nsw1#$")
    ser.close()


def test_survives_many_open_close_cycles(console: PtyConsole, backend: FakePorts) -> None:
    for i in range(20):
        ser = (
            serial.serial_for_url(console.path, timeout=0.05)
            if i % 2
            else serial.Serial(console.path, timeout=0.05)
        )
        ser.write(b"\r")
        expect(ser, rb"sw1[>#]$")
        if i == 10:
            ser.write(b"show interfaces status\r")  # close while output is still arriving
        ser.close()
    fd = os.open(console.path, os.O_RDWR | os.O_NOCTTY)  # a client that is not pyserial
    os.close(fd)
    ser = serial.Serial(console.path, timeout=0.05)
    ser.reset_input_buffer()
    ser.write(b"enable\ren\rconf t\rint Gi0/2\rshutdown\rend\r")
    expect(ser, rb"end\r\nsw1#$")
    assert backend.admin["Gi0/2"] is False
    ser.close()


def test_session_outlives_the_client_and_logout_offers_a_new_one(console: PtyConsole) -> None:
    ser = serial.Serial(console.path, timeout=0.05)
    ser.write(b"enable\ren\rconf t\r")
    expect(ser, rb"sw1\(config\)#$")
    ser.close()
    ser = serial.Serial(console.path, timeout=0.05)
    ser.write(b"\r")
    expect(ser, rb"sw1\(config\)#$")  # like a real console line, the mode is still there
    ser.write(b"end\rexit\r")
    expect(ser, rb"Press RETURN to get started\.\r\n$")
    ser.write(b"\r\n")
    expect(ser, rb"\r\nsw1>$")
    ser.close()


def test_stable_link_path(backend: FakePorts, tmp_path) -> None:
    link = tmp_path / "sha-sw1.console"
    con = PtyConsole(switch_session_factory("sw1", "cisco_ios", PORTS, backend), link=link)
    try:
        assert os.readlink(link) == con.path
        ser = serial.Serial(str(link), timeout=0.05)
        ser.write(b"\r")
        expect(ser, rb"sw1>$")
        ser.close()
    finally:
        con.close()
    assert not link.exists()


@pytest.mark.skipif(not os.access("/dev", os.W_OK), reason="needs a writable /dev for the ttyUSB link")
def test_netmiko_serial_driver_through_a_ttyusb_link(backend: FakePorts) -> None:
    """netmiko's *_serial drivers only open ports that pyserial's comports() lists; that list globs
    /dev/ttyUSB* without looking at sysfs, so the keeper can expose a console under such a name."""
    link = f"/dev/ttyUSB-hiltest-{os.getpid()}"
    con = PtyConsole(
        switch_session_factory("sw1", "cisco_ios", PORTS, backend, enable_secret="en"), link=link
    )
    try:
        conn = ConnectHandler(
            device_type="cisco_ios_serial", serial_settings={"port": link, "timeout": 0.1}, secret="en"
        )
        conn.enable()
        conn.send_config_set(["interface Gi0/4", "shutdown"])
        assert backend.admin["Gi0/4"] is False
        assert re.search(r"Gi0/4\s+disabled", conn.send_command("show interfaces status"))
        conn.disconnect()
    finally:
        con.close()
    assert not os.path.lexists(link)


def test_console_login(backend: FakePorts) -> None:
    con = PtyConsole(
        switch_session_factory("sw1", "huawei", ["GigabitEthernet0/0/1"], backend), users={"ops": "pw"}
    )
    try:
        ser = serial.Serial(con.path, timeout=0.05)
        ser.write(b"\r")
        expect(ser, rb"Username: $")
        ser.write(b"ops\rbad\r")
        expect(ser, rb"% Login invalid\r\n\r\nUsername: $")
        ser.write(b"ops\rpw\r")
        out = expect(ser, rb"<sw1>$")
        assert b"pw" not in out.split(b"Password:")[-1]
        ser.write(b"system-view\rinterface GigabitEthernet0/0/1\rshutdown\rreturn\r")
        expect(ser, rb"return\r\n<sw1>$")
        assert backend.admin["GigabitEthernet0/0/1"] is False
        ser.close()
    finally:
        con.close()


def test_pager_on_the_console() -> None:
    ports = [f"Gi1/0/{i}" for i in range(1, 41)]
    con = PtyConsole(switch_session_factory("sw1", "cisco_ios", ports, FakePorts(ports)))
    try:
        ser = serial.Serial(con.path, timeout=0.05)
        ser.write(b"show interfaces status\r")
        expect(ser, rb" --More-- $")
        ser.write(b" ")
        assert b"Gi1/0/40" in expect(ser, rb"sw1>$")
        ser.close()
    finally:
        con.close()
