"""`python -m edgekd` (and `torchrun ... -m edgekd distill ...`): the CLI."""

from edgekd.cli import main

main()
