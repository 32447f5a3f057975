"""The configuration reference and the README: every field described, the README's reference
the generated one, every README section an error points to present, the README's claims about
the commands and the loss API true, and every command-line option with its help."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pytest
import typer
from pydantic import BaseModel
from typer.testing import CliRunner

from prsl.attacks import ATTACKS
from prsl.cli import app
from prsl.data.hf import COLUMN_ROLES, ROLES
from prsl.data.registry import OPTIONS, READERS
from prsl.evaluate import EvalConfig
from prsl.losses import LOSSES, PRSL, get_loss
from prsl.reference import COMMANDS, END, START, TOPICS, as_markdown, fields_without_description

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SRC = ROOT / "src" / "prsl"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def sections(model: type[BaseModel], seen: set | None = None) -> list[type[BaseModel]]:
    """``model`` and every pydantic model its fields hold, however deep."""
    seen = set() if seen is None else seen
    if model in seen:
        return []
    seen.add(model)
    found = [model]
    for field in model.model_fields.values():
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            for inner in (arg, *typing.get_args(arg)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    found += sections(inner, seen)
    return found


# ------------------------------------------------------------------------ every field described


@pytest.mark.parametrize(
    "model",
    sorted(
        {
            m
            for root in [*COMMANDS.values(), *LOSSES.values(), *ATTACKS.values()]
            for m in sections(root)
        },
        key=lambda m: f"{m.__module__}.{m.__qualname__}",
    ),
    ids=lambda m: m.__qualname__,
)
def test_no_config_loss_or_attack_field_lacks_a_description(model):
    missing = [name for name, field in model.model_fields.items() if not field.description]
    assert not missing, f"{model.__qualname__}: {missing}"


def test_the_reference_shows_no_row_without_a_description():
    assert fields_without_description() == []


@pytest.mark.parametrize("name", list(READERS))
def test_every_reader_option_is_documented_in_one_place(name):
    """``OPTIONS`` holds exactly each reader's parameters (``max_examples`` is shared)."""
    parameters = set(inspect.signature(READERS[name]).parameters) - {"max_examples"}
    assert set(OPTIONS[name]) == parameters
    assert all(text.strip() for text in OPTIONS[name].values())


def test_every_hf_column_role_is_described():
    assert set(COLUMN_ROLES) == set(ROLES) >= {"image", "caption", "question", "answers"}
    assert all(text.strip() for text in COLUMN_ROLES.values())


# ----------------------------------------------------------------------------- prsl config


def test_config_show_evaluate_lists_every_field_with_type_default_and_description():
    result = invoke("config", "--show", "evaluate")
    assert result.exit_code == 0, result.output
    for name in EvalConfig.model_fields:
        assert f"\n  {name}: " in result.output, name
    assert "  n_images: int, ≥ 1 = 32\n" in result.output
    assert "  max_new_tokens: int, ≥ 1 = 20\n" in result.output
    assert 'attack_target: "clean" | "ground_truth" | "each_ground_truth" = clean' in result.output
    assert "[bootstrap]" in result.output and "[attacks[]]" in result.output


def test_config_show_data_names_each_readers_options_and_the_column_roles():
    result = invoke("config", "--show", "data")
    assert result.exit_code == 0, result.output
    imagefolder = result.output.split("[data imagefolder]")[1].split("\n[")[0]
    assert "  directory: str | Path = —" in imagefolder and "  path:" not in imagefolder
    hf = result.output.split("[data hf]")[1].split("\n[")[0]
    assert "  path: str = —" in hf
    assert "  caption: column name" in result.output.split("[hf columns]")[1]


@pytest.mark.parametrize("topic", TOPICS)
def test_config_show_every_topic(topic):
    result = invoke("config", "--show", topic)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("[")


def test_config_show_an_unknown_topic_is_a_user_error():
    result = invoke("config", "--show", "evaluation")
    assert result.exit_code == 2
    assert "unknown config topic 'evaluation'" in result.output


def test_the_readmes_reference_is_the_generated_one():
    start, end = README.find(START), README.find(END)
    assert 0 <= start < end, f"README.md lacks the {START} ... {END} block"
    block = README[start : end + len(END)] + "\n"
    assert block == as_markdown(), (
        "README.md's configuration reference is stale: replace the block between its markers "
        "with the output of `prsl config --markdown`"
    )
    assert invoke("config", "--markdown").output == as_markdown()


# ------------------------------------------------------------------------------ README claims


def headings() -> set[str]:
    return {line.lstrip("#").strip() for line in README.splitlines() if line.startswith("#")}


def sections_named_in_errors() -> set[str]:
    """Every README section an error message of ``src/`` points to, by its quoted name."""
    named = set()
    for path in SRC.rglob("*.py"):
        text = " ".join(path.read_text(encoding="utf-8").split())
        text = re.sub(r'"\s*"', "", text)  # implicitly joined string literals
        named |= set(re.findall(r"README(?:'s|,)? '([^']+)'", text))
    return named


def test_every_readme_section_an_error_points_to_exists():
    named = sections_named_in_errors()
    assert "Bring your own VLM" in named  # the finder finds the errors' pointers
    assert named <= headings(), sorted(named - headings())


def test_every_link_inside_the_readme_finds_its_heading():
    """``[text](#anchor)``: GitHub's anchor of some heading (lower case, punctuation dropped,
    spaces as hyphens)."""
    anchors = {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings()}
    linked = set(re.findall(r"\]\(#([^)]+)\)", README))
    assert linked and linked <= anchors, sorted(linked - anchors)


def test_the_bring_your_own_vlm_section_covers_a_local_vlm():
    section = README.split("## Bring your own VLM")[1].split("\n## ")[0]
    for needed in (
        "model.name_or_path",
        "evaluate -m",
        "chat template",
        "model.vlm_trainable",
        "caption_prompt",
        "vqa_template",
        "model.lora_r",
        "model.lora_alpha",
    ):
        assert needed in section, needed


def test_the_readmes_get_loss_api_is_the_real_one():
    assert "loss.recorded()" not in README
    assert 'get_loss("prsl", k=10).params.recorded()' in README
    assert not hasattr(get_loss("prsl", k=10), "recorded")
    recorded = get_loss("prsl", k=10).params.recorded()
    assert recorded == PRSL(k=10).recorded()
    assert recorded["k"] == 10 and recorded["weight"] == PRSL().weight  # defaults included


def commands() -> dict:
    group = typer.main.get_command(app)
    return dict(group.commands)  # type: ignore[attr-defined]


def test_the_readme_names_the_commands_that_read_a_config():
    text = " ".join(README.split())
    found = re.search(r"((?:`[a-z]+`(?:, | and ))+`[a-z]+`) read a config:", text)
    assert found, "README.md lacks the sentence naming the commands that read a config"
    claimed = set(re.findall(r"`([a-z]+)`", found.group(1)))
    with_config = {
        name
        for name, command in commands().items()
        if any("--set" in param.opts for param in command.params)
    }
    assert claimed == with_config
    for name in set(commands()) - with_config - {"config"}:
        assert f"`{name}`" in text.split("read a config:")[1].split(". ")[1], name


def test_every_option_of_every_command_has_help_text():
    group = typer.main.get_command(app)
    owners = {"prsl": group, **{f"prsl {n}": c for n, c in commands().items()}}
    missing = [
        f"{owner} {'/'.join(param.opts)}"
        for owner, command in owners.items()
        for param in command.params
        if param.param_type_name == "option" and not (param.help or "").strip()
    ]
    assert not missing, missing
    main_help = invoke("--help").output
    assert "--verbose" in main_help and "traceback" in main_help
