"""The documentation: README.md is a landing page that begins with the two commands, every figure
in it and in docs/ is generated (current, and none typed by hand in prose), and the docs site
builds with no broken link or anchor."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.docs_pages import (
    BLOCKS,
    DEFINITIONS,
    DOCS,
    ROOT,
    GeneratedBlock,
    bare_figures,
    pages,
    record_schema,
)

README = ROOT / "README.md"
MKDOCS = ROOT / "mkdocs.yml"
TEST_COMMAND = 'python -m pip install torch==2.13.0 && python -m pip install -e ".[dev,ray]" && python -m pytest -n auto --dist loadfile'


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b.path.name}:{b.name}")
def test_generated_documentation_is_current(block: GeneratedBlock) -> None:
    """Stale after the code, a reference set, an example or the benchmark figures change:
    `python -m tests.docs_pages` rewrites it."""
    assert block.documented() == block.generate()


def test_a_stale_block_is_found(tmp_path: Path) -> None:
    """The check above can fail: a hand edit of a generated block is not what `generate` gives."""
    page = tmp_path / "page.md"
    block = GeneratedBlock(page, "record schema", record_schema)
    page.write_text(f"intro\n{block.begin}\n| key | content |\n{block.end}\nrest\n")
    assert block.documented() != block.generate()
    block.write()
    assert block.documented() == block.generate()
    assert page.read_text().startswith("intro\n") and page.read_text().endswith("rest\n")


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_no_figure_is_typed_by_hand(page: Path) -> None:
    """A measured figure in prose goes stale silently: it belongs in a generated block (or, for a
    setting, among the lint's named definitions, each with its reason)."""
    assert bare_figures(page.read_text()) == []


def test_the_lint_finds_typed_figures_and_spares_code_and_generated_blocks() -> None:
    typed = "The suite took 12 min 54 s, its teacher scored 0.967 and ran 1.8× faster at 97 %."
    assert bare_figures(typed) == ["12 min", "54 s", "0.967", "1.8×", "97 %"]
    block = GeneratedBlock(Path("x"), "figures", str)
    spared = f"`took 12 s`\n```\n0.967\n```\n{block.begin}\n3.5 s\n{block.end}\n"
    assert bare_figures(spared) == []
    assert all(bare_figures(f"it is {name} here") == [] for name in DEFINITIONS)


def test_readme_is_a_landing_page_that_begins_with_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    first_block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first_block is not None and text.index("```bash") < text.index("\n## ")
    run, test = first_block.group(1).strip().splitlines()
    assert run.endswith("python -m bench run --all && python -m bench report")
    assert test == TEST_COMMAND
    assert TEST_COMMAND.split(" && ")[-1] in (ROOT / ".ci" / "run").read_text()


def test_readme_and_the_site_list_every_page_and_every_page_is_listed() -> None:
    nav = [next(iter(entry.values())) for entry in yaml.safe_load(MKDOCS.read_text())["nav"]]
    on_disk = sorted(p.name for p in DOCS.glob("*.md"))
    assert sorted(nav) == on_disk
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", README.read_text()))
    assert linked == set(on_disk) - {"index.md"}


@pytest.fixture(scope="module")
def mkdocs() -> str:
    if shutil.which("mkdocs") is None and not _module_available("mkdocs"):
        pytest.skip('the docs site needs mkdocs: pip install -e ".[dev]"')
    return sys.executable


def _module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def build(python: str, config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_docs_site_builds_with_no_broken_link(mkdocs: str, tmp_path: Path) -> None:
    result = build(mkdocs, MKDOCS, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "plugins.html").is_file()
    assert (tmp_path / "site" / "leaderboard" / "index.html").is_file()


@pytest.mark.parametrize(
    "link", ["[gone](missing.md)", "[gone](other.md#no-such-heading)"], ids=["page", "anchor"]
)
def test_a_broken_link_or_anchor_fails_the_build(mkdocs: str, tmp_path: Path, link: str) -> None:
    """The check above can fail: our own configuration, on two pages with one bad link."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(f"# Home\n\nSee {link}.\n")
    (docs / "other.md").write_text("# Other\n\n## A heading\n")
    config = yaml.safe_load(MKDOCS.read_text())
    config.update(docs_dir=str(docs), nav=[{"Home": "index.md"}, {"Other": "other.md"}])
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    result = build(mkdocs, tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "missing.md" in result.stderr or "no-such-heading" in result.stderr


def test_the_profile_table_names_every_dataset_and_seed_range_of_each_profile() -> None:
    """The user guide's table of profiles is prose, checked here against `bench.plan.profiles`:
    every dataset (an OpenML table by its id) and the last seed of each profile's seeds and
    claim seeds appear in its row."""
    from bench.plan.profiles import PROFILES

    rows = {
        match.group(1): match.group(0)
        for match in re.finditer(r"^\| `([\w-]+)`.*$", (DOCS / "user-guide.md").read_text(), re.M)
    }
    for name in ("smoke", "default", "full", "real", "cifar100"):
        profile, row = PROFILES.get(name), rows[name]
        cells = row.split(" | ")
        for dataset in profile.datasets:
            assert dataset.removeprefix("openml:") in cells[1], (name, dataset)
        for seeds in (profile.seeds, profile.claim_seeds):
            if seeds:
                assert re.search(rf"\b{max(seeds)}\b", cells[2]), (name, seeds)
