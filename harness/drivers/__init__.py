"""harness/drivers."""
