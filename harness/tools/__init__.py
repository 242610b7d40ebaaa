"""Programs the harness runs AS a lab host (inside its network namespace, started by a fault or a scenario):
an attacker's flood (`flood`) and its one-shot probes (`probe`). Each is a standalone module (`python -m
harness.tools.X`) that imports nothing else of the harness, so it starts fast and depends on nothing the
controller holds; it prints JSON lines on stdout for the controller to read."""
