"""Sharp edges of the command line found in first real runs: launcher arguments, advice in error messages,
and positional arguments that change meaning with a flag."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import modbind.errors
from modbind.checkpoint_io import read_checkpoint
from modbind.cli.main import cli
from modbind.config import PluginConfig, Recipe
from modbind.contracts import _nested_model
from modbind.errors import CheckpointError


def test_align_accepts_the_local_rank_argument_the_deepspeed_launcher_appends(tmp_path):
    for flag in (["--local_rank=0"], ["--local-rank", "3"], ["--local_rank", "1"]):
        shown = CliRunner().invoke(cli, ["align", *flag, "--help"])
        assert shown.exit_code == 0, shown.output
        # Parsing went past the flag: the run fails on the missing recipe, not on an unknown option.
        run = CliRunner().invoke(cli, ["align", *flag, "--recipe", str(tmp_path / "missing.yaml")])
        assert run.exit_code == 2
        assert "recipe file not found" in run.output and "No such option" not in run.output
    help_text = CliRunner().invoke(cli, ["align", "--help"]).output
    assert "local_rank" not in help_text and "deepspeed --num_gpus 8 $(which modbind) align" in help_text


# --- advice in error messages names only flags, commands and recipe keys that exist ---------------------

PACKAGE = Path(__file__).resolve().parents[1] / "modbind"
PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
COMMAND = re.compile(r"`modbind ([a-z][a-z-]*(?: [a-z][a-z-]*)?)")
RECIPE_KEY = re.compile(r"(?<![\w.])((?:anchor|plugin|data|train|eval|output)(?:\.[a-z_]+)+)")
NOT_KEYS = {"anchor.identity"}
"""Dotted words in messages that are not recipe keys: a Python expression in a programmer's hint (cache.py)."""
FILE_ENDINGS = {"jsonl", "json", "yaml", "yml", "csv", "txt", "tar"}
ERRORS = {name for name, value in vars(modbind.errors).items()
          if isinstance(value, type) and issubclass(value, modbind.errors.ModbindError)}


def _text_of(node: ast.AST) -> str:
    """The literal text of a message expression (f-string holes become a space)."""
    parts = []
    for child in ast.walk(node):
        if isinstance(child, ast.Constant) and isinstance(child.value, str):
            parts.append(child.value)
        elif isinstance(child, ast.FormattedValue):
            parts.append(" ")
    return "".join(parts)


def error_messages() -> list[tuple[str, str]]:
    """(where, text) of every message given to a ModbindError subclass raised in modbind/ and plugins/."""
    found = []
    for path in sorted([*PACKAGE.rglob("*.py"), *PLUGINS.rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name in ERRORS:
                    text = " ".join(_text_of(arg) for arg in node.exc.args)
                    found.append((f"{path.name}:{node.lineno}", text))
    return found


def all_commands(group: click.Command, prefix: str = "") -> dict[str, click.Command]:
    commands = {prefix.strip(): group} if prefix else {}
    for name, command in getattr(group, "commands", {}).items():
        commands.update(all_commands(command, f"{prefix} {name}"))
    return commands


def recipe_key_exists(key: str) -> bool:
    model: Any = Recipe
    for part in key.split("."):
        if part == "options" and model is PluginConfig:
            return True  # plugin options belong to each plugin's own model
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        model = _nested_model(fields[part].annotation) or fields[part].annotation
    return True


def test_every_flag_command_and_recipe_key_an_error_message_advises_exists():
    commands = all_commands(cli)
    flags = {flag for command in commands.values() for param in command.params
             for flag in (*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ()))}
    messages = error_messages()
    assert len(messages) > 100  # the scan sees the messages (a broken scan would pass vacuously)
    wrong = []
    for where, text in messages:
        wrong += [f"{where}: {flag}" for flag in FLAG.findall(text) if flag not in flags]
        wrong += [f"{where}: modbind {cmd}" for cmd in COMMAND.findall(text)
                  if cmd not in commands and cmd.split()[0] not in commands]
        keys = [k for k in RECIPE_KEY.findall(text) if k not in NOT_KEYS and k.rsplit(".", 1)[-1] not in FILE_ENDINGS]
        wrong += [f"{where}: {key}" for key in keys if not recipe_key_exists(key)]
    assert wrong == []


def test_a_missing_checkpoint_file_advises_the_recipe_key_not_a_missing_flag(tmp_path):
    with pytest.raises(CheckpointError, match="plugin.options.checkpoint") as err:
        read_checkpoint(tmp_path / "absent.pt")
    assert "--checkpoint" not in str(err.value)
