"""The lab the controller works on: `Lab` (topology + backend) and the backend interface.

Open one with `harness.lab.session.open_lab`; the backends live in `harness.lab.virtual` (the twin, the only
module of harness/ that imports virtual/) and `harness.lab.physical` (management interfaces only).
"""

from harness.lab.base import (
    Lab,
    LabBackend,
    LabStatus,
    LinkStatus,
    ManagementStatus,
    OutletStatus,
    ProcessStatus,
    Tap,
)

__all__ = [
    "Lab",
    "LabBackend",
    "LabStatus",
    "LinkStatus",
    "ManagementStatus",
    "OutletStatus",
    "ProcessStatus",
    "Tap",
]
