"""stack/login."""
