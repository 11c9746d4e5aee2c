"""``python -m freekd`` runs the CLI."""

from freekd.cli import app

app(prog_name="freekd")
