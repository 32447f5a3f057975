"""``python -m prsl`` runs the command line."""

from prsl.cli import run

run()
