"""The ``prsl`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="PRSL: robust fine-tuning and honest adversarial evaluation of vision-language models.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def quickstart() -> None:
    """Run the embedded default end to end (not built yet)."""
    typer.echo("prsl quickstart is not built yet (tracked in the quickstart issue).", err=True)
    raise typer.Exit(code=2)


@app.callback()
def main() -> None:
    """PRSL toolkit."""
