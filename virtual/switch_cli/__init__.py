"""Emulated switch CLI (Cisco IOS, Huawei VRP), independent of transport.

Port state lives in a ``PortBackend`` (the keeper's veths); what a CLI session changes that outlives it
(descriptions, SPAN sessions, saves) lives in a ``SwitchConfig`` shared by all sessions of one switch.
``SwitchCLI(hostname, vendor, ...)`` opens a session in the vendor's dialect (``cisco``, ``huawei``);
``switch_session_factory`` gives SSHServer and PtyConsole new sessions on one shared config.
"""

from virtual.switch_cli.cisco import CiscoIOS
from virtual.switch_cli.grammar import Grammar
from virtual.switch_cli.huawei import HuaweiVRP
from virtual.switch_cli.ports import (
    VENDORS,
    MirrorBackend,
    MirrorSession,
    Port,
    PortBackend,
    PortTable,
    SwitchConfig,
)
from virtual.switch_cli.session import SwitchCLI, switch_session_factory

__all__ = [
    "VENDORS",
    "CiscoIOS",
    "Grammar",
    "HuaweiVRP",
    "MirrorBackend",
    "MirrorSession",
    "Port",
    "PortBackend",
    "PortTable",
    "SwitchCLI",
    "SwitchConfig",
    "switch_session_factory",
]
