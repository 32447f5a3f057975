"""The ``prsl`` command line: thin commands over the Python API.

Every command that takes a config accepts ``--config FILE.yaml`` and any number of
``--set section.field=value`` overrides. A mistake the user can fix (a
:class:`~prsl.core.errors.UserError`: bad config, missing file, unknown name, an output folder
holding other results) prints one line, literally, and exits with status 2; ``-v`` adds the
traceback. Anything else is a bug or the machine and keeps its traceback (out of memory adds a
one-line hint). Ctrl-C says what was kept and how to resume, and exits with 130 (a fine-tune
saves its finished steps first; on SIGTERM too, which exits with 143).

Every command that writes a folder holds its lock while it runs: a second run into the same
folder is refused in one line naming the first one's pid, or waits for it with ``--wait``.
"""

from __future__ import annotations

import functools
import logging
import os
import runpy
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

try:  # typer >= 0.2x carries its own click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click.exceptions import NoArgsIsHelpError, UsageError
from rich.text import Text

from prsl.core.errors import Interrupted, UserError

app = typer.Typer(
    help="PRSL: robust fine-tuning and honest adversarial evaluation of vision-language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True, highlight=False)
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
USER_ERROR = 2

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config field: section.field=value (repeatable)."),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(help="Discard results in the output folder computed with other settings."),
]
WaitOpt = Annotated[
    bool,
    typer.Option(help="If another run is writing the output folder, wait for it to finish."),
]
KEPT_ON_CTRL_C = {
    "evaluate": "the predictions written so far are kept; run the same command again to "
    "resume from them",
    "attack": "the images written so far are kept; run the same command again to add the rest",
    "sweep": "finished cells, checkpoints and predictions are kept; run the same command again "
    "to resume",
    "quickstart": "finished models, checkpoints and predictions are kept; run the same command "
    "again to resume",
    "report": "the report may be incomplete; run the same command again",
}
"""What a Ctrl-C keeps, per command (a fine-tune says it itself: :class:`Interrupted`)."""
_state = {"verbose": False}


def say(label: str, text: str, style: str = "bold") -> None:
    """``label text`` on stderr, ``text`` printed literally (no markup, no hard wrapping)."""
    console.print(Text.assemble((label, style), " ", str(text)))


def user_errors(command):
    """Turn a :class:`UserError` into one line and status 2, Ctrl-C into a resume hint and 130;
    every other exception keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as err:
            if _state["verbose"]:
                console.print(Text("".join(traceback.format_exception(err))))
            say("error:", str(err), "bold red")
            raise typer.Exit(code=USER_ERROR) from None
        except Interrupted as err:
            say("interrupted:", err.message, "bold yellow")
            raise typer.Exit(code=err.code) from None
        except KeyboardInterrupt:
            kept = KEPT_ON_CTRL_C.get(command.__name__, "run the same command again")
            say("interrupted:", kept, "bold yellow")
            raise typer.Exit(code=INTERRUPTED) from None
        except Exception as err:
            if _is_out_of_memory(err):
                say(
                    "hint:",
                    "out of memory: lower batch_size, or use bf16 "
                    "(train.mixed_precision=bf16); the traceback follows",
                    "bold yellow",
                )
            raise

    return wrapper


def _is_out_of_memory(err: Exception) -> bool:
    import torch

    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class _Stderr(logging.Handler):
    """Log records as plain lines on whatever ``sys.stderr`` is when they are emitted."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # a closed stream must not turn a warning into a crash
            self.handleError(record)


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Log progress (INFO) and show the traceback of an error."
        ),
    ] = False,
) -> None:
    """PRSL toolkit."""
    _state["verbose"] = verbose
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(old)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:  # our own rich bars show progress; transformers' per-file bars are noise
        _quiet_hub_progress_bars()
        # a hub id that cannot be reached retries with a warning per attempt; the one line
        # prsl prints when it gives up says what to do
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def _quiet_hub_progress_bars() -> None:
    """Turn off the Hugging Face hub's (and so transformers') progress bars without importing
    transformers, which would cost every command seconds before it can even read its config."""
    if "huggingface_hub" in sys.modules:  # already imported: it read the environment already
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
    else:  # read when it is imported, by whatever command needs it
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@app.command()
@user_errors
def quickstart(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/quickstart"),
    fast: Annotated[bool, typer.Option(help="Fewer images and steps (under 90 s).")] = False,
    seed: Annotated[
        int,
        typer.Option(
            help="Training and evaluation seed of the first run (--seeds N: seed, seed+1, ...)."
        ),
    ] = 0,
    seeds: Annotated[
        int, typer.Option(help="Train and evaluate with this many seeds (seed, seed+1, ...).")
    ] = 1,
    defenses: Annotated[
        bool, typer.Option(help="Also train CE-AT (adversarial fine-tuning) and FARE.")
    ] = False,
    wait: WaitOpt = False,
) -> None:
    """Shapes data -> CE and PRSL tiny models -> white-box, transfer and Square attacks ->
    report with intervals, the verdict and gradient-masking checks."""
    from prsl.quickstart import quickstart as run

    report = run(out, fast=fast, seed=seed, seeds=seeds, defenses=defenses, wait=wait)
    say("answer:", report.with_suffix(".md").read_text().splitlines()[0])  # its first line
    say("report:", f"{report}  (also {report.with_suffix('.md')})", "bold green")


@app.command()
@user_errors
def finetune(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Discard the run already in train.output_dir and start over.")
    ] = False,
    wait: WaitOpt = False,
) -> None:
    """Fine-tune a model with any registered loss (accelerate: CPU, GPU, or multi-GPU)."""
    from prsl.config import load_config
    from prsl.train import FinetuneConfig

    cfg = load_config(FinetuneConfig, config, set_)
    from prsl.train import finetune as run  # the heavy stack, once the config is valid

    result = run(cfg, resume=resume, overwrite=overwrite, wait=wait)
    say("model:", str(result.model_dir), "bold green")


@app.command()
@user_errors
def evaluate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Model dir or hub id (repeatable).")
    ] = None,
    overwrite: OverwriteOpt = False,
    wait: WaitOpt = False,
) -> None:
    """Generate on clean and adversarial images, score, write results.json (resumable)."""
    from prsl.config import load_config, validate_config
    from prsl.evaluate import EvalConfig
    from prsl.results import RESULTS

    cfg = load_config(EvalConfig, config, set_)
    if model:
        cfg = validate_config(EvalConfig, {**cfg.model_dump(), "models": list(model)})
    from prsl.evaluate import evaluate as run  # the heavy stack, once the config is valid

    # under accelerate launch, only the first process scores
    if run(cfg, overwrite=overwrite, wait=wait):
        say("results:", str(Path(cfg.output_dir) / RESULTS), "bold green")


@app.command()
@user_errors
def attack(
    model: Annotated[str, typer.Option("--model", "-m", help="Model dir or hub id.")],
    out: Annotated[Path, typer.Option(help="Where adversarial PNGs go.")] = Path("runs/attack"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
    wait: WaitOpt = False,
) -> None:
    """Craft adversarial images (8-bit PNGs) with the first attack and ε of the config."""
    from prsl.config import load_config
    from prsl.evaluate import EvalConfig

    cfg = load_config(EvalConfig, config, set_)
    from prsl.evaluate import attack_to_files  # the heavy stack, once the config is valid

    written = attack_to_files(cfg, model, out, overwrite=overwrite, wait=wait)
    if written is not None:  # under accelerate launch, the first process reports
        say("wrote", f"{written} adversarial image(s) to {out}", "bold green")


@app.command()
@user_errors
def report(
    results: Annotated[
        list[Path], typer.Argument(help="results.json file(s), or the folders holding them.")
    ],
    out: Annotated[Path, typer.Option(help="Report directory.")] = Path("runs/report"),
    title: Annotated[str, typer.Option(help="The report's title.")] = "prsl robustness report",
    wait: WaitOpt = False,
) -> None:
    """Write report.md and a self-contained report.html from results files."""
    from prsl.core.lock import hold
    from prsl.core.paths import check_output_dir
    from prsl.report import write_report

    for path in results:  # check every input before writing anything
        from prsl.results import read_results

        read_results(path)
    check_output_dir(out, "--out")
    with hold(out, "--out", wait=wait):
        paths = write_report(results, out, title=title)
    say("answer:", paths["answer"])
    say("report:", str(paths["html"]), "bold green")


@app.command()
@user_errors
def sweep(config: ConfigOpt = None, set_: SetOpt = None, wait: WaitOpt = False) -> None:
    """Grid over loss and attack parameters; finished cells are skipped on rerun."""
    from prsl.config import load_config
    from prsl.core.lock import hold
    from prsl.core.paths import check_output_dir
    from prsl.sweep import SweepConfig

    cfg = load_config(SweepConfig, config, set_)
    from prsl.report import write_report  # the heavy stack, once the config is valid
    from prsl.results import RESULTS
    from prsl.sweep import run_sweep

    out = check_output_dir(cfg.output_dir, "output_dir")
    with hold(out, "output_dir", wait=wait):  # the sweep and its report, one after the other
        run_sweep(cfg, wait=wait)
        paths = write_report([out / RESULTS], out, title="prsl sweep")
    say("answer:", paths["answer"])
    say("report:", str(paths["html"]), "bold green")


@app.command()
@user_errors
def bench(
    name: Annotated[str, typer.Argument(help="losses | attacks | train | evaluate")] = "losses",
    args: Annotated[list[str] | None, typer.Argument(help="Arguments for the script.")] = None,
) -> None:
    """Run a benchmark script from a source checkout's benchmarks/ folder."""
    from prsl.core.errors import MissingInput

    script = Path("benchmarks") / f"{name}.py"
    if not script.is_file():
        raise MissingInput(
            f"{script} not found: run `prsl bench` from the root of a prsl source checkout"
        )
    sys.argv = [str(script), *(args or [])]
    runpy.run_path(str(script), run_name="__main__")


@app.command("config")
@user_errors
def config_reference(
    show: Annotated[
        str | None,
        typer.Option(
            help="finetune | evaluate | sweep | losses | attacks | data: its fields' names, "
            "types, defaults and descriptions (default: all)."
        ),
    ] = None,
    markdown: Annotated[
        bool, typer.Option(help="The whole reference as Markdown (the README's section).")
    ] = False,
) -> None:
    """Every config field, loss and attack parameter and data reader option, from the schemas."""
    from prsl.reference import TOPICS, as_markdown, as_text

    if markdown:
        typer.echo(as_markdown(), nl=False)
        return
    typer.echo("\n".join(as_text(topic) for topic in ([show] if show else TOPICS)), nl=False)


def run(argv: list[str] | None = None) -> None:
    """The ``prsl`` console script: the app, with a usage mistake (an unknown option, a missing
    argument) also printed as one ``error:`` line, status 2."""
    try:
        code = app(argv, standalone_mode=False)
    except NoArgsIsHelpError as err:  # bare `prsl`: the help, as click shows it
        err.show()
        sys.exit(err.exit_code)
    except UsageError as err:
        where = f" (see `{err.ctx.command_path} --help`)" if err.ctx is not None else ""
        say("error:", err.format_message() + where, "bold red")
        sys.exit(USER_ERROR)
    except typer.Abort:
        sys.exit(INTERRUPTED)
    sys.exit(code or 0)


if __name__ == "__main__":  # `python -m prsl.cli`, e.g. under `accelerate launch -m prsl.cli`
    run()
