"""Faults and every other change to the lab: what the harness breaks or sets up, how it knows it did, and
how it always puts it back (DESIGN.md: nothing changes the lab except through the Injector).

The API scenarios, fixtures and the CLI code against:

    inj = Injector(lab, journal_path=None, history=None, dry_run=False, steps=None,
                   restore_first=True, out=print, settle=5.0)   # heals a dead run's leftovers first
    ch = inj.make(kind, target, **params)          # or make_fault(lab, kind, target, **params)
    with inj.apply(ch, duration=None): ...         # apply, verify, heal at block end (alias: inj.fault)
    inj.inject(ch, duration=None) / inj.heal(ch)   # the same, by hand; inj.start(ch) / inj.end(ch)
    inj.once(ch)                                   # apply, verify, heal at once (a swarm restart)
    id = inj.track_process(kind, pid, what)        # a process we started (tcpdump): stopped by restore
    inj.release(id)                                # ... which its owner has now stopped itself
    inj.heal_all()                                 # every open change but tracked processes
    restore(lab, journal_path=None, history=None, steps=None, include_live=False) -> [entries]
    Journal(path).read() -> JournalRead(records, skipped); .open_faults(); default_journal(lab)

Kinds (`make_fault(lab, kind, target, **params)`; history f `fault.inject/heal`, or `change.apply/revert`
for those marked change):

| kind | target | params | how |
| --- | --- | --- | --- |
| port_down | `switch:port`, or a device (its switch port) | | switch CLI `shutdown` / `no shutdown` |
| link_cut | a topology link | | both ends' ports down |
| service_kill, _stop, _pause | a host | service= | `systemctl kill -s SIGKILL`, `stop`, `kill -s SIGSTOP` |
| power_off | a device on a PDU outlet | | PDU `olOff` / `olOn` |
| blackhole | a host | | nft: drop all traffic of its data address, link up |
| partition | host a | b=, one_way=False | nft on a (or b): drop a->b (and b->a) |
| loss | a host | percent= | nft `numgen random` drop, both directions |
| rate_limit | a host | kbit=, dev= (its data NIC) | nft policer both directions, plus tc tbf on dev |
| planned_switch | the home site's UL | scope=, value= (str or list), to=, agents= | POST / DELETE /v1/rules |
| swarm_service (change) | agents host | verb= restart/stop/start | `systemctl <verb> hil-swarm`; heal start |
| span_session (change) | a switch | session=1, sources= (PBX/CTI ports) | monitor session; heal: remove it |
| process (change) | what it is | pid=, start=, role= | by track_process; heal: SIGTERM if still the same |
| agent_session (change) | an agent | verb= logout/login | signed POST to its swarm; logout healed by login |
| flood | attacker host | at=, slow=, idle=, every=, rate=, seed= | flood tool in the host; SSH if physical |

History records (docs/history.md): each change's apply and heal as `fault.inject` / `fault.heal` (or
`change.apply` / `change.revert`), invoke value `history_value()` (`id`, `fault` or `change` = the kind,
`target`, its params, `site`); the heal's invoke `{"id", "reason"}` (`done`, `max_duration`, `heal_all`,
`at_exit`, `inject failed`, or the caller's: `agent_login` when a schedule's login heals an
`agent_session` logout). A nemesis schedule adds `schedule.start` and `schedule.op` records of its own
(harness/scenario/explore.py).

Refused before anything is sent: a target not `cuttable`/`fair_game`, the controller's management path (a
port, a management address, the host's NIC facing the controller, SSH and what it stands on: services are
an allowlist of the units the topology names). `Injector(dry_run=True)` prints every command, sends none.
"""

from harness.faults.base import (
    CHANGE_OPS,
    FAULT_OPS,
    NEMESIS,
    SETTLE,
    Change,
    Fault,
    FaultHealFailed,
    FaultNotEffective,
    FaultRefused,
)
from harness.faults.changes import PlannedSwitch, SpanSession, SwarmService, TrackedProcess, span_sources
from harness.faults.flood import Flood
from harness.faults.host import HostFault, ServiceFault, ServiceKill, ServicePause, ServiceStop
from harness.faults.injector import Injector
from harness.faults.journal import Journal, JournalError, JournalRead, default_journal
from harness.faults.network import Blackhole, Loss, NftFault, Partition, RateLimit
from harness.faults.power import PowerOff
from harness.faults.registry import KINDS, make_fault, register
from harness.faults.restore import restore
from harness.faults.safety import HOST_KINDS, SWARM_UNIT, allowed_services
from harness.faults.switch import LinkCut, PortDown

__all__ = [
    "CHANGE_OPS",
    "FAULT_OPS",
    "HOST_KINDS",
    "KINDS",
    "NEMESIS",
    "SETTLE",
    "SWARM_UNIT",
    "Blackhole",
    "Change",
    "Fault",
    "FaultHealFailed",
    "FaultNotEffective",
    "FaultRefused",
    "Flood",
    "HostFault",
    "Injector",
    "Journal",
    "JournalError",
    "JournalRead",
    "LinkCut",
    "Loss",
    "NftFault",
    "Partition",
    "PlannedSwitch",
    "PortDown",
    "PowerOff",
    "RateLimit",
    "ServiceFault",
    "ServiceKill",
    "ServicePause",
    "ServiceStop",
    "SpanSession",
    "SwarmService",
    "TrackedProcess",
    "allowed_services",
    "default_journal",
    "make_fault",
    "register",
    "restore",
    "span_sources",
]
