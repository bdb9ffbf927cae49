"""agentbus platform."""
