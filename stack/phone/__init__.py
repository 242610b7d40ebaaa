"""stack/phone."""
