"""Device drivers: one interface per device kind (switch, host, phone, console, power), vendors behind it.

`driver_for(lab, name)` builds the right driver for a device of the topology, with credentials from the
environment and host keys from the lab's known_hosts.
"""

from __future__ import annotations

from typing import Any

from harness.drivers.base import DeviceError, DeviceUnreachable, Driver, RefusedBySafety, Step, Steps
from harness.lab import Lab

__all__ = ["DeviceError", "DeviceUnreachable", "Driver", "RefusedBySafety", "Step", "Steps", "driver_for"]


def driver_for(lab: Lab, name: str, steps: Steps | None = None) -> Any:
    from harness.credentials import reveal

    d = lab.topology.device(name)
    creds = lab.topology.model.credentials
    ssh = lab.topology.model.ssh
    trust = ssh.trust_new_host_keys and not lab.virtual
    if d.kind == "switch":
        from harness.drivers.switch import SwitchAccess, switch_driver

        if creds.switch is None:
            raise DeviceError(f"{lab.topology.file}: credentials.switch is needed to drive {name}")
        access = SwitchAccess(
            host=str(d.spec.mgmt),
            port=d.spec.ssh_port,
            username=creds.switch.username,
            password=reveal(creds.switch.password, "credentials.switch.password"),
            secret=creds.switch.secret.reveal() if creds.switch.secret else None,
            known_hosts=lab.known_hosts(),
            trust_new_host_keys=trust,
        )
        return switch_driver(d.spec.device_type, name, access, steps)
    if d.kind in ("pbx", "cti", "ul", "host"):
        from harness.drivers.host import HostAccess, HostDriver

        if creds.host is None:
            raise DeviceError(f"{lab.topology.file}: credentials.host is needed to drive {name}")
        access = HostAccess(
            host=d.control_address,
            port=d.spec.ssh_port,
            username=creds.host.username,
            password=reveal(creds.host.password, "credentials.host.password"),
            known_hosts=lab.known_hosts(),
            trust_new_host_keys=trust,
        )
        return HostDriver(name, access, steps)
    if d.kind == "phone":
        from harness.drivers.phone import PhoneAccess, phone_driver

        if creds.phone is None:
            raise DeviceError(f"{lab.topology.file}: credentials.phone is needed to drive {name}")
        access_p = PhoneAccess(
            host=d.control_address,
            port=d.spec.api_port,
            username=creds.phone.username,
            password=reveal(creds.phone.password, "credentials.phone.password"),
        )
        return phone_driver(d.spec.vendor, name, access_p, steps)
    if d.kind == "console":
        return console_for(lab, name, steps)
    if d.kind == "pdu":
        from harness.drivers.power import power_driver

        return power_driver(name, d.spec.model, console_for(lab, d.spec.console, steps), steps)
    raise DeviceError(f"{name}: no driver for device kind {d.kind!r} yet")


def console_url(lab: Lab, console: str) -> str:
    """Where a console port is: its device path or socket:// URL; the lab's pty for `url: virtual`."""
    spec = lab.topology.device(console).spec
    if spec.url != "virtual":
        return str(spec.url)
    path = lab.backend.console_url(console)
    if not path:
        raise DeviceError(f"{console}: url 'virtual' needs the virtual lab to serve a console of that name")
    return path


def console_for(lab: Lab, console: str, steps: Steps | None = None) -> Any:
    """The driver for a console port: the vendor CLI of the device it is cabled to (switch), or plain."""
    from harness.credentials import reveal
    from harness.drivers.console import ConsoleAccess, ConsoleDriver, SwitchConsole

    con = lab.topology.device(console)
    if con.kind != "console":
        raise DeviceError(f"{console} is a {con.kind}, not a console port")
    login = lab.topology.model.credentials.console
    access = ConsoleAccess(
        url=console_url(lab, console),
        baudrate=con.spec.baudrate,
        username=login.username if login else None,
        password=reveal(login.password, "credentials.console.password") if login else None,
    )
    target = lab.topology.devices.get(con.spec.device)
    if target is not None and target.kind == "switch":
        sw = lab.topology.model.credentials.switch
        secret = reveal(sw.secret, "credentials.switch.secret") if sw and sw.secret else None
        return SwitchConsole(target.name, access, target.spec.device_type, secret, steps)
    return ConsoleDriver(con.spec.device, access, steps)
