"""Pieces shared by the unified login, the CTI server, the agent client and the swarm (no harness imports)."""
