"""Every ```python block of README.md runs as written, each in a fresh namespace.

A block may be skipped only with a ``<!-- readme-test: skip (reason) -->`` line right above it,
for what truly needs a server or a file made by an earlier shell command; every block, skipped
or not, is also checked for undefined names, so a snippet cannot use a name it never defines.
Runs on the embedded models over a few paragraphs, from a scratch folder holding the example
text at the path the README names.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.S)
_SKIP = re.compile(r"<!-- readme-test: skip \((?P<reason>[^)]+)\) -->")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class Snippet:
    line: int
    code: str
    skip: str | None  # the reason it is not run, if marked

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"


def snippets() -> list[Snippet]:
    text = README.read_text(encoding="utf-8")
    found = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("code")) + 1
        marker = _SKIP.search(match.group("before"))
        found.append(Snippet(line, match.group("code"), marker.group("reason") if marker else None))
    return found


SNIPPETS = snippets()


def test_the_readme_has_the_snippets_this_test_expects():
    assert len(SNIPPETS) >= 8
    assert sum(s.skip is None for s in SNIPPETS) >= 6  # most of them run


def _ruff() -> str:
    path = Path(sys.executable).parent / "ruff"
    assert path.exists(), f"ruff (a dev dependency) is missing next to {sys.executable}"
    return str(path)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.name)
def test_a_snippet_uses_no_undefined_name(snippet: Snippet):
    result = subprocess.run(
        [
            _ruff(),
            "check",
            "--isolated",
            "--select",
            "F821,F822,F823",
            "--output-format",
            "concise",
            "--stdin-filename",
            "snippet.py",
            "-",
        ],
        input=snippet.code,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"{snippet.name}:\n{result.stdout}{result.stderr}"


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder like a clone's root: the example text where the README reads it."""
    data = tmp_path / "examples" / "data"
    data.mkdir(parents=True)
    (data / "frankenstein.txt").symlink_to(ROOT / "examples" / "data" / "frankenstein.txt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    return tmp_path


@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if s.skip is None], ids=lambda s: s.name)
def test_a_snippet_runs_as_written(snippet: Snippet, scratch: Path, capsys):
    code = compile(snippet.code, snippet.name, "exec")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(code, {"__name__": "__readme__"})  # a fresh namespace per snippet
    ours = [
        str(w.message)
        for w in caught
        if any(part in (w.filename or "") for part in ("shared_core", "memorag"))
    ]
    assert not ours, f"{snippet.name} warned: {ours}"
    assert os.getcwd() == str(scratch)
    capsys.readouterr()


def test_every_skip_says_why():
    for snippet in SNIPPETS:
        assert snippet.skip is None or len(snippet.skip) > 10, snippet.name
