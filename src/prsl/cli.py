"""The ``prsl`` command line: thin commands over the Python API.

Every command that takes a config accepts ``--config FILE.yaml`` and any number of
``--set section.field=value`` overrides. User errors (bad config, missing files, unknown names)
print one clear message and exit with status 2 instead of a traceback.
"""

from __future__ import annotations

import functools
import logging
import runpy
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    help="PRSL: robust fine-tuning and honest adversarial evaluation of vision-language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config field: section.field=value (repeatable)."),
]


def user_errors(command):
    """Turn the errors a user can fix into a one-line message and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
            console.print(f"[bold red]error:[/] {err}")
            raise typer.Exit(code=2) from None

    return wrapper


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """PRSL toolkit."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if not verbose:  # our own rich bars show progress; transformers' per-file bars are noise
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


@app.command()
@user_errors
def quickstart(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/quickstart"),
    fast: Annotated[bool, typer.Option(help="Fewer images and steps (under 2 minutes).")] = False,
    seed: int = 0,
) -> None:
    """Shapes data -> CE and PRSL tiny models -> BIM/PGD attacks -> report."""
    from prsl.quickstart import quickstart as run

    report = run(out, fast=fast, seed=seed)
    console.print(f"[bold green]report:[/] {report}  (also {report.with_suffix('.md')})")


@app.command()
@user_errors
def finetune(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = False,
) -> None:
    """Fine-tune a model with any registered loss (accelerate: CPU, GPU, or multi-GPU)."""
    from prsl.config import FinetuneConfig, load_config
    from prsl.train import finetune as run

    cfg = load_config(FinetuneConfig, config, set_)
    result = run(cfg, resume=resume)
    console.print(f"[bold green]model:[/] {result.model_dir}")


@app.command()
@user_errors
def evaluate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Model dir or hub id (repeatable).")
    ] = None,
) -> None:
    """Generate on clean and adversarial images, score, write results.json (resumable)."""
    from prsl.config import EvalConfig, load_config
    from prsl.evaluate import RESULTS
    from prsl.evaluate import evaluate as run

    cfg = load_config(EvalConfig, config, set_)
    if model:
        cfg.models = list(model)
    run(cfg)
    console.print(f"[bold green]results:[/] {Path(cfg.output_dir) / RESULTS}")


@app.command()
@user_errors
def attack(
    model: Annotated[str, typer.Option("--model", "-m", help="Model dir or hub id.")],
    out: Annotated[Path, typer.Option(help="Where adversarial PNGs go.")] = Path("runs/attack"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Craft adversarial images (8-bit PNGs) with the first attack and ε of the config."""
    from prsl.attack_images import attack_to_files
    from prsl.config import EvalConfig, load_config

    cfg = load_config(EvalConfig, config, set_)
    written = attack_to_files(cfg, model, out)
    console.print(f"[bold green]wrote[/] {written} adversarial image(s) to {out}")


@app.command()
@user_errors
def report(
    results: Annotated[list[Path], typer.Argument(help="results.json file(s).")],
    out: Annotated[Path, typer.Option(help="Report directory.")] = Path("runs/report"),
    title: str = "prsl robustness report",
) -> None:
    """Write report.md and a self-contained report.html from results files."""
    from prsl.report import write_report

    paths = write_report(results, out, title=title)
    console.print(f"[bold green]report:[/] {paths['html']}")


@app.command()
@user_errors
def sweep(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Grid over loss and attack parameters; finished cells are skipped on rerun."""
    from prsl.config import SweepConfig, load_config
    from prsl.report import write_report
    from prsl.sweep import run_sweep

    cfg = load_config(SweepConfig, config, set_)
    run_sweep(cfg)
    out = Path(cfg.output_dir)
    paths = write_report([out / "results.json"], out, title="prsl sweep")
    console.print(f"[bold green]report:[/] {paths['html']}")


@app.command()
@user_errors
def bench(
    name: Annotated[str, typer.Argument(help="losses | attacks | train")] = "losses",
    args: Annotated[list[str] | None, typer.Argument(help="Arguments for the script.")] = None,
) -> None:
    """Run a benchmark script from a source checkout's benchmarks/ folder."""
    script = Path("benchmarks") / f"{name}.py"
    if not script.is_file():
        raise FileNotFoundError(
            f"{script} not found: run `prsl bench` from the root of a prsl source checkout"
        )
    sys.argv = [str(script), *(args or [])]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":  # `python -m prsl.cli`, e.g. under `accelerate launch -m prsl.cli`
    app()
