"""The README cannot rot: its numbers come from results.json, it stays short, its sections
come in the order a newcomer reads them, and every command it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from benchmarks import headline

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()

SECTIONS = ["Requirements", "Quick start", "Concepts", "Commands", "Phones",
            "Validating a LUT", "NetAdapt", "Your own model", "Python API", "Numbers",
            "Known limits", "Testing"]

def test_headline_tables_are_what_results_json_gives() -> None:
    for markers, expected in headline.blocks(headline.load()).items():
        assert headline.readme_block(README, *markers) == expected, (
            "README.md's headline tables differ from benchmarks/results.json: "
            "run python -m benchmarks.headline --write")


def test_headline_tables_are_short() -> None:
    assert 1 <= len(headline.ROWS) <= 12
    assert 1 <= len(headline.AGREEMENT) <= 10  # one row per test set


def test_headline_paths_name_what_they_read() -> None:
    with pytest.raises(KeyError, match="sections/nowhere"):
        headline.value(headline.load(), "sections/nowhere/x")


def test_readme_is_at_most_300_lines() -> None:
    assert len(README.splitlines()) <= 300


def test_sections_in_order() -> None:
    found = re.findall(r"^## (.+)$", README, re.MULTILINE)
    assert found == SECTIONS


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, re.MULTILINE))


def test_every_make_target_named_exists() -> None:
    named = set(re.findall(r"(?<![\w-])make ([a-z][\w-]*)", README))
    listed = re.search(r"Make targets: (.*?);", README, re.DOTALL)
    assert listed, "the Commands section lists the Make targets"
    named |= set(re.findall(r"`([a-z][\w-]*)`", listed.group(1)))
    assert named, "the README names no make target"
    assert named <= _make_targets(), f"not in the Makefile: {sorted(named - _make_targets())}"


def test_every_netadapt_verb_named_exists() -> None:
    from netadapt_cli.main import app

    cli = typer.main.get_command(app)
    missing = []
    for verb, sub in set(re.findall(r"(?<![\w./-])netadapt ([a-z][\w-]*)(?: ([a-z][\w-]*))?",
                                    README)):
        command = cli.commands.get(verb)  # type: ignore[attr-defined]
        if command is None:
            missing.append(verb)
            continue
        group = getattr(command, "commands", None)
        if group and sub and sub not in group:
            missing.append(f"{verb} {sub}")
    assert not missing, f"the README names commands the CLI lacks: {sorted(missing)}"
    # `db` with its sub-verbs written as a|b|c in the commands table
    for sub in re.search(r"netadapt db ([\w|\\]+)", README).group(1).replace("\\", "").split("|"):
        assert sub in cli.commands["db"].commands, sub  # type: ignore[attr-defined]


def test_headline_write_then_check(tmp_path: Path) -> None:
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{headline.BEGIN}\n| old | table |\n{headline.END}\n\nbetween\n\n"
                     f"{headline.AGREEMENT_BEGIN}\n| old | too |\n{headline.AGREEMENT_END}\n"
                     "\nafter\n")
    assert headline.main(["--check", "--readme", str(stale)]) == 1
    assert headline.main(["--write", "--readme", str(stale)]) == 0
    assert headline.main(["--check", "--readme", str(stale)]) == 0
    text = stale.read_text()
    assert text.startswith("# x\n\n") and text.endswith("\n\nafter\n")
    assert "\n\nbetween\n\n" in text and "| test set | n |" in text
    assert "| old | table |" not in text and "| old | too |" not in text
    stale.write_text(text.replace(headline.AGREEMENT_END, ""))
    with pytest.raises(ValueError, match="agreement:end"):
        headline.main(["--check", "--readme", str(stale)])
