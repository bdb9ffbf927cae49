"""Each agent's own projection of the events: its tables, their migrations and the
appliers that fill them. The tools read these tables, and the agent registers the
appliers and migrations with its runtime, so they sit here, below both."""
