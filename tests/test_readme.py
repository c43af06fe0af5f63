"""The README and the docs/ pages are the manual: short where a newcomer starts, linked, and true to the code.

The CLI reference and the configuration table are generated from the commands (scripts/cli_docs.py) and
must match them; the tutorial's commands are run by tests/test_tutorial.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MANUAL = [README, *DOCS]
README_MAX_LINES = 350
# The order a newcomer reads in (issues 19 and 33): what and for whom first, then these; the detail is in docs/.
README_SECTIONS = ["Quick start", "Your CSV in four commands", "Results", "Glossary", "Learn more", "Development"]
README_MAX_WORDS = 1800
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def text_outside_code(path: Path) -> str:
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#+ (.+)$", text_outside_code(path), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        found.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
    # Explicit HTML anchors (<a id="...">), which GitHub keeps, name places inside a section.
    return found | set(re.findall(r'<a id="([^"]+)"></a>', text_outside_code(path)))


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(text_outside_code(path)) if not re.match(r"[a-z]+:", t)]


def test_cli_reference_and_configuration_match_the_commands() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts/cli_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_is_read_in_ten_minutes() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/ (at most {README_MAX_LINES})"


def test_the_readme_is_a_ten_minute_read() -> None:
    words = len(README.read_text(encoding="utf-8").split())
    assert words <= README_MAX_WORDS, f"README.md has {words} words; move detail to docs/ (at most {README_MAX_WORDS})"


def test_the_readme_sections_come_in_the_newcomers_order() -> None:
    headings = re.findall(r"^## (.+)$", text_outside_code(README), re.M)
    assert headings == README_SECTIONS


def test_every_relative_link_and_anchor_resolves() -> None:
    broken = []
    for page in MANUAL:
        for target in relative_links(page):
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_every_docs_page_links_back_to_the_readme_and_is_linked_from_it() -> None:
    readme_targets = {target.partition("#")[0] for target in relative_links(README)}
    for page in DOCS:
        assert "../README.md" in relative_links(page), f"{page.name} has no link back to the README"
        assert f"docs/{page.name}" in readme_targets, f"the README does not link {page.name}"


def test_the_variables_documented_without_an_option_are_read_somewhere() -> None:
    table = (ROOT / "docs/configuration.md").read_text(encoding="utf-8").split("## Environment variables")[1]
    variables = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table.split("\n## ")[0]))
    sources = [p for d in ("core", "training", "export", "worker", "tests", "bench", "scripts", "deploy")
               for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".sh")] + [ROOT / "Makefile"]
    code = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sources)
    assert variables and {v for v in variables if v not in code} == set()


def test_the_quick_start_shows_what_make_demo_prints() -> None:
    readme = README.read_text(encoding="utf-8")
    assert "make demo" in readme and "make test" in readme
    summary = re.findall(r'print\(f"  ([a-z][a-zA-Z ()]+?)\s+\{', (ROOT / "scripts/demo.py").read_text())
    assert len(summary) >= 5 and [line for line in summary if line not in readme] == []


def test_every_command_answers_version() -> None:
    for command in ("lstm-train", "lstm-export", "lstm-worker"):
        out = subprocess.run([str(Path(sys.executable).parent / command), "--version"],
                             capture_output=True, text=True)
        assert out.returncode == 0 and "version" in out.stdout, (command, out.stdout, out.stderr)
