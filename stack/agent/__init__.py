"""stack/agent."""
