"""Keep the README's CLI reference identical to the commands' ``--help``.

``python scripts/readme_cli.py`` rewrites every block between
``<!-- cli: COMMAND -->`` and ``<!-- /cli -->`` in README.md with the output
of ``COMMAND --help``; ``--check`` only reports drift (used by the tests).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- cli: (?P<command>[^>]+?) -->\n)(?P<body>.*?)(<!-- /cli -->)", re.S)


def help_text(command: str) -> str:
    program, *args = command.split()
    binary = Path(sys.executable).parent / program
    # A fixed width makes the text independent of the terminal it is generated on.
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run([str(binary), *args, "--help"], capture_output=True, text=True, env=env, check=True)
    return result.stdout.rstrip() + "\n"


def render(readme: str) -> str:
    def replace(match: re.Match) -> str:
        return f"{match.group(1)}```text\n{help_text(match.group('command'))}```\n{match.group(4)}"

    return BLOCK.sub(replace, readme)


def main() -> int:
    current = README.read_text(encoding="utf-8")
    rendered = render(current)
    if "--check" in sys.argv:
        if rendered != current:
            print("README.md CLI reference is out of date: run python scripts/readme_cli.py")
            return 1
        return 0
    README.write_text(rendered, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
