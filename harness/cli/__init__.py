"""`hil`: the lab controller's command line, one module per command group (`hil --help` lists them)."""

from harness.cli import bench, explore, lab, suite, switch  # noqa: F401  (each registers its commands)
from harness.cli.common import main

__all__ = ["main"]
