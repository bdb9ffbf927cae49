"""`python -m agentbus` runs the command line."""

from agentbus.cli import main

main()
