"""The harness's registry holds what the docs quote: every experiment id in the README, docs
and reports is registered, every registered result is committed and holds the numbers named,
``reproduce`` reruns an experiment and prints new beside recorded; the docs stay short and the
settings reference lists every ``MemoRAGConfig`` field."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from benchmarks import __main__ as harness
from benchmarks import heads, registry
from benchmarks.registry import EXPERIMENTS, Experiment, Number, Step
from shared_core.config import MemoRAGConfig

REPO = Path(__file__).resolve().parents[1]
EXP_ID = re.compile(r"\[exp: ([a-z0-9-]+)\]")
registry.load()


def _quoting_files() -> list[Path]:
    return [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "benchmarks" / "reports").glob("*.md")),
    ]


def test_every_experiment_id_in_the_docs_is_registered() -> None:
    quoted: dict[str, list[str]] = {}
    for path in _quoting_files():
        for exp_id in EXP_ID.findall(path.read_text(encoding="utf-8")):
            quoted.setdefault(exp_id, []).append(path.name)
    assert quoted, "the README quotes no experiment"
    unknown = {i: files for i, files in quoted.items() if i not in EXPERIMENTS}
    assert not unknown, f"experiment ids not in benchmarks.registry: {unknown}"
    readme = EXP_ID.findall((REPO / "README.md").read_text(encoding="utf-8"))
    assert {"heads-study", "memory-engine", "speed"} <= set(readme)


def test_every_experiment_has_its_recorded_result_and_numbers() -> None:
    for exp in EXPERIMENTS.values():
        assert exp.recorded.is_file(), f"{exp.id}: no {exp.recorded}"
        assert exp.numbers and exp.steps and exp.minutes > 0, exp.id
        assert all(s.args.split()[0] in registry.COMMANDS for s in exp.steps), exp.id
        payload = json.loads(exp.recorded.read_text(encoding="utf-8"))
        for number in exp.numbers:
            value = registry.pick(payload, number.path)  # KeyError names a stale path
            assert isinstance(value, (int, float)), (exp.id, number.path, value)


def test_every_results_folder_belongs_to_an_experiment() -> None:
    folders = {p.name for p in registry.RESULTS.iterdir() if p.is_dir()}
    assert folders - {"archive", "dumps"} == set(EXPERIMENTS)
    assert not [p for p in registry.RESULTS.iterdir() if p.is_file()], "results/ has loose files"


def test_readme_numbers_match_their_recorded_results() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for exp_id in set(EXP_ID.findall(readme)):
        rows = harness.compare(EXPERIMENTS[exp_id], None)
        shown = [old for _, old, _ in rows if old in readme]
        assert shown, f"the README quotes none of {exp_id}'s recorded numbers"
        if exp_id == "memory-engine":  # the README's table quotes every one
            assert len(shown) == len(rows), [r for r in rows if r[1] not in readme]
    study = json.loads(EXPERIMENTS["heads-study"].recorded.read_text())
    default, dense = study["chosen"]["dump_hotpotqa"]["r@5"], study["dense"]["dump_hotpotqa"]["r@5"]
    hotpot = f"{default:.3f} vs {dense:.3f}"
    assert hotpot == "0.840 vs 0.790" and hotpot in readme


def test_docs_are_at_most_300_lines() -> None:
    long = {
        p.name: n
        for p in (REPO / "docs").glob("*.md")
        if (n := len(p.read_text().splitlines())) > 300
    }
    assert not long, f"docs over 300 lines: {long}"


def test_the_settings_reference_lists_every_config_field() -> None:
    text = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    documented = re.findall(r"^\| `([a-z0-9_]+)` \|", text, flags=re.MULTILINE)
    fields = [f.name for f in dataclasses.fields(MemoRAGConfig)]
    assert len(documented) == len(set(documented)), "a field is documented twice"
    assert set(fields) - set(documented) == set(), "fields missing from docs/settings.md"
    assert set(documented) - set(fields) == set(), "docs/settings.md names fields that are gone"


def test_the_harness_has_at_most_twelve_modules() -> None:
    assert len(list((REPO / "benchmarks").glob("*.py"))) <= 12


def _dump(
    folder: Path, name: str, seed: int, n: int = 6, n_heads: int = 4, chunks: int = 8
) -> None:
    g = torch.Generator().manual_seed(seed)
    rows, tensors = [], {}
    for i in range(n):
        covers: list[list[int]] = [[] for _ in range(chunks)]
        covers[i % chunks] = [0]
        rows.append({"id": f"{name}-q{i}", "covers": covers, "gold_items": 1})
        tensors[f"q{i}.query"] = torch.rand(n_heads, chunks, generator=g, dtype=torch.float64)
        tensors[f"q{i}.null"] = torch.rand(n_heads, chunks, generator=g, dtype=torch.float64) / 2
        tensors[f"q{i}.entries"] = torch.ones(n_heads, chunks, dtype=torch.float64)
        tensors[f"q{i}.dense"] = torch.rand(chunks, generator=g, dtype=torch.float64)
    heads.save_dump(folder, name, {"rows": rows}, tensors)


def test_reproduce_reruns_an_experiment_and_prints_new_beside_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dumps = tmp_path / "dumps"
    _dump(dumps, "train", 0)
    _dump(dumps, "check", 1)
    args = (
        f"heads-study --train train --test check --tops 1 2 --weights 1 --norms sum "
        f"--weightings fixed --folds 2 --dumps {dumps} --name study --out {{out}}"
    )
    exp = Experiment(
        id="tiny-study",
        about="a study over two synthetic recordings",
        steps=(Step(args),),
        result="study.json",
        numbers=(
            Number("train R@5, chosen", "best.train.r@5"),
            Number("check dense R@5", "dense.check.r@5"),
        ),
        minutes=0.1,
    )
    monkeypatch.setattr(registry, "RESULTS", tmp_path / "results")
    monkeypatch.setitem(EXPERIMENTS, exp.id, exp)
    heads.study_main(args.format(out=exp.folder).split()[1:])  # the recorded run
    recorded = json.loads(exp.recorded.read_text())
    truth = recorded["best"]["train"]["r@5"]
    recorded["best"]["train"]["r@5"] = 0.123  # so recorded and new can be told apart
    exp.recorded.write_text(json.dumps(recorded))
    rows = harness.reproduce(exp, tmp_path / "rerun")
    assert (tmp_path / "rerun" / "study.json").is_file()
    assert rows[0] == ("train R@5, chosen", "0.123", f"{truth:.3f}")
    assert rows[1][1] == rows[1][2]  # the dense list is the same data
    harness.main(["show", "tiny-study"])
    assert "| train R@5, chosen | 0.123 |" in capsys.readouterr().out


def test_the_cli_lists_experiments_and_dry_runs_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    harness.main(["list"])
    out = capsys.readouterr().out
    assert "retrieval" in out and all(exp_id in out for exp_id in EXPERIMENTS)
    harness.main(["reproduce", "heads-study", "--dry-run", "--out", str(tmp_path / "none")])
    out = capsys.readouterr().out
    assert not (tmp_path / "none").exists()
    assert "heads-study --train dump_hotpotqa" in out
    assert "| number | recorded |\n" in out and "| 0.840 |\n" in out  # no new column
    with pytest.raises(SystemExit):
        harness.main(["reproduce", "no-such-id"])


def test_a_listed_module_that_does_not_exist_yet_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "MODULES", ("benchmarks.not_written_yet", "benchmarks.engine"))
    registry.load()  # no ImportError: answers.py / stores.py register once they exist
    assert "speed" in registry.COMMANDS
    with pytest.raises(ValueError, match="registered twice"):
        registry.command("speed", "again")(lambda argv=None: None)
    with pytest.raises(ValueError, match="unknown methods"):
        registry.experiment(
            Experiment("x", "x", (Step("speed"),), "x.json", (), 1.0, methods=("nope",))
        )
