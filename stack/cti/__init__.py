"""stack/cti."""
