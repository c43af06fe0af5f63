"""Generate the command-line reference and the configuration table from the commands themselves.

``python scripts/cli_docs.py`` rewrites the generated parts of two pages; ``--check`` only
reports drift (``tests/test_readme.py`` runs it, so a changed option fails the tests until the
pages are regenerated):

- ``docs/cli.md``: every block between ``<!-- cli: COMMAND -->`` and ``<!-- /cli -->`` is the
  output of ``COMMAND --help``;
- ``docs/configuration.md``: the block between ``<!-- options -->`` and ``<!-- /options -->`` is
  one table of every option of every command, with its environment variable and default, read
  from the Click commands (the same values ``--help`` prints).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: import the commands from this checkout

from export.cli import main as export_main  # noqa: E402
from training.cli import main as train_main  # noqa: E402
from worker.cli import main as worker_main  # noqa: E402

CLI_PAGE = ROOT / "docs" / "cli.md"
CONFIGURATION_PAGE = ROOT / "docs" / "configuration.md"
HELP_BLOCK = re.compile(r"(<!-- cli: (?P<command>[^>]+?) -->\n)(?P<body>.*?)(<!-- /cli -->)", re.S)
OPTIONS_BLOCK = re.compile(r"(<!-- options -->\n)(?P<body>.*?)(<!-- /options -->)", re.S)


def leaf_commands(prefix: str, group: click.Group) -> list[tuple[str, click.Command]]:
    """Every command of a group, a subgroup's commands named with its name (``lstm-worker topics create``)."""
    found = []
    for name, command in group.commands.items():
        found += (leaf_commands(f"{prefix} {name}", command) if isinstance(command, click.Group)
                  else [(f"{prefix} {name}", command)])
    return found


# In the order a user meets them: train, export, then the worker's commands.
COMMANDS: list[tuple[str, click.Command]] = [
    ("lstm-train", train_main),
    ("lstm-export", export_main),
    *leaf_commands("lstm-worker", worker_main),
]


def help_text(command: str) -> str:
    program, *args = command.split()
    binary = Path(sys.executable).parent / program
    # A fixed width makes the text independent of the terminal it is generated on.
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run([str(binary), *args, "--help"], capture_output=True, text=True, env=env, check=True)
    return result.stdout.rstrip() + "\n"


def render_help_blocks(page: str) -> str:
    def replace(match: re.Match) -> str:
        return f"{match.group(1)}```text\n{help_text(match.group('command'))}```\n{match.group(4)}"

    return HELP_BLOCK.sub(replace, page)


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def option_rows() -> list[tuple[str, str, str, str, str]]:
    """``(commands, option, env var, default, meaning)``; an option several commands share word for word is one row."""
    rows: dict[tuple[str, str, str, str], list[str]] = {}
    for name, command in COMMANDS:
        context = click.Context(command, info_name=name, **command.context_settings)
        for param in command.params:
            if not isinstance(param, click.Option) or not param.expose_value:
                continue  # --help and --version: actions, not settings
            option, meaning = param.get_help_record(context) or ("", "")
            extra = param.get_help_extra(context)
            # The help text ends with what get_help_extra holds ([env var: ...; default: ...]): shown in columns.
            meaning = re.sub(r"\s*\[(env var|default|required)[^\]]*\]\s*$", "", meaning)
            default = extra.get("required") or extra.get("default", "")
            if param.is_flag and not param.secondary_opts and not default:
                default = "off"  # a plain flag: Click shows no default for it
            written = re.search(r"\s*\[default: ([^\]]*)\]", meaning)  # a default Click cannot compute, in words
            if written and not default:
                default, meaning = written.group(1), meaning.replace(written.group(0), "")
            if extra.get("range"):
                meaning = f"{meaning} Range: {extra['range']}."
            key = (option, ", ".join(extra.get("envvars", ())), default, meaning)
            rows.setdefault(key, []).append(name)
    return [(", ".join(names), *key) for key, names in rows.items()]


def render_options_table() -> str:
    lines = ["| command | option | environment variable | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for commands, option, envvar, default, meaning in option_rows():
        lines.append(f"| {cell(commands)} | `{cell(option)}` | {f'`{envvar}`' if envvar else ''} "
                     f"| {cell(default)} | {cell(meaning)} |")
    return "\n".join(lines) + "\n"


def render_configuration(page: str) -> str:
    return OPTIONS_BLOCK.sub(lambda m: f"{m.group(1)}{render_options_table()}{m.group(3)}", page)


PAGES = [(CLI_PAGE, render_help_blocks), (CONFIGURATION_PAGE, render_configuration)]


def main() -> int:
    stale = []
    for page, render in PAGES:
        current = page.read_text(encoding="utf-8")
        rendered = render(current)
        if rendered == current:
            continue
        if "--check" in sys.argv:
            stale.append(str(page.relative_to(ROOT)))
        else:
            page.write_text(rendered, encoding="utf-8")
    if stale:
        print(f"{', '.join(stale)} out of date with the commands: run python scripts/cli_docs.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
