"""``python -m agentstream`` is the ``agentstream`` command."""

from agentstream.service.cli import main

main(prog_name="agentstream")
