"""`python -m harness.cli`: the same as `hil`."""

from harness.cli import main

main()
