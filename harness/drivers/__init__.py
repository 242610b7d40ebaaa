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
        addr = d.spec.mgmt or d.spec.address
        access = HostAccess(
            host=str(addr),
            port=d.spec.ssh_port,
            username=creds.host.username,
            password=reveal(creds.host.password, "credentials.host.password"),
            known_hosts=lab.known_hosts(),
            trust_new_host_keys=trust,
        )
        return HostDriver(name, access, steps)
    raise DeviceError(f"{name}: no driver for device kind {d.kind!r} yet")
