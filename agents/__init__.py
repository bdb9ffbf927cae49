"""The shop's agents, built on the platform's public API only."""
