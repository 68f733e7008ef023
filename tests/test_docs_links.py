"""The README and docs/ stay navigable and runnable: every relative link reaches a file, and every
``charhub-ops`` command line in the README's shell blocks names a command and options that exist.

Pure file reading and the CLI's own command tree (typer → click); no services.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from charhub_ops.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```(?:bash|sh)\n(.*?)```", re.S)


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links only in prose, not in code blocks
    text = re.sub(r"`[^`\n]*`", "", text)
    return [target for target in LINK.findall(text) if "://" not in target and not target.startswith("mailto:")]


def test_the_docs_exist():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"docs/architecture.md", "docs/deployments.md"} <= names
    for pipeline in ("backup", "retention", "restore", "pitr", "migrations", "cleanup", "monitoring", "capacity",
                     "deploy"):
        assert f"docs/pipelines/{pipeline}.md" in names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_reach_a_file(page):
    links = _links(page)
    assert all("#" not in target for target in links), [t for t in links if "#" in t]
    missing = [target for target in links if not (page.parent / target).resolve().is_file()]
    assert not missing, f"{page.relative_to(ROOT)}: links to missing files {missing}"


def test_every_doc_page_is_linked_from_the_readme_or_docs():
    linked = {(page.parent / target).resolve() for page in PAGES for target in _links(page)}
    orphans = [p.relative_to(ROOT).as_posix() for p in PAGES if p.name != "README.md" and p not in linked]
    assert not orphans, orphans


def _readme_command_lines() -> list[list[str]]:
    text = "\n".join(line.removeprefix(">").removeprefix(" ") for line in (ROOT / "README.md").read_text().splitlines())
    commands = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "charhub-ops" in words:
                commands.append(words[words.index("charhub-ops") + 1:])
    return commands


def _resolve(words: list[str]):
    command = typer.main.get_command(app)  # typer's own click: test groups by their ``commands``
    while hasattr(command, "commands") and words and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    return command, words


def test_the_readme_shows_runnable_commands():
    commands = _readme_command_lines()
    assert len(commands) >= 6  # the backup, the restore over production, the rollback, the maintenance window
    for words in commands:
        command, rest = _resolve(words)
        assert not hasattr(command, "commands"), f"charhub-ops {' '.join(words)}: no such command"
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        unknown = [w.split("=")[0] for w in rest if w.startswith("--") and w.split("=")[0] not in known]
        assert not unknown, f"charhub-ops {' '.join(words)}: unknown options {unknown}"


def test_the_emergency_restore_replaces_and_confirms():
    restores = [w for w in _readme_command_lines() if w[:1] == ["restore"]]
    assert any({"--replace", "--yes", "--backup"} <= set(w) and "latest" in w for w in restores), restores
