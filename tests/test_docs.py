"""The docs hold: the configuration reference is the code's, every relative link resolves inside the
repository (and every #anchor to a heading of a markdown file exists), and a report never links a
run that a reader of it cannot open."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from transferlab.config.reference import anchor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


# --- the configuration reference -----------------------------------------------------------------
def test_config_reference_is_current():
    import config_reference

    committed = config_reference.OUT.read_text() if config_reference.OUT.exists() else ""
    assert committed == config_reference.fresh(), (
        "docs/configuration.md is stale (a config, a range rule or a strategy knob changed): regenerate it with "
        "`python scripts/config_reference.py` (make config-reference) and commit it"
    )


def test_the_reference_covers_every_rule_and_every_strategy_knob():
    import config_reference

    from transferlab.config.checks import rules_of

    text = config_reference.OUT.read_text()
    for key in config_reference.run_rules():
        assert f"| `{key}` |" in text, key
    for name, strategy in config_reference.strategies().items():
        section = text.split(f"### `strategy={name}`")[1].split("\n### ")[0]
        for knob in rules_of(strategy.Config):
            assert f"| `strategy.{knob}` |" in section, (name, knob)


# --- links --------------------------------------------------------------------------------------
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text without code blocks and code spans, where a [x](y) is no link."""
    return _CODE.sub("", _FENCE.sub("", text))


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text())):
        slug = anchor(heading)
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def _repo_files() -> set[Path] | None:
    """Files git tracks or would track (not ignored); None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return {(ROOT / p).resolve() for p in out.stdout.split("\0") if p and (ROOT / p).exists()}


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def broken_links(files: list[Path], known: set[Path], root: Path = ROOT) -> list[str]:
    """Each link of `files` whose target is not one of the `known` files (or a folder of them), or
    names an anchor its markdown target lacks."""
    folders = {parent for f in known for parent in f.parents}
    bad = []
    for md in files:
        for target in _LINK.findall(_prose(md.read_text())):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            where, _, fragment = unquote(target).partition("#")
            path = (root / where.lstrip("/")) if where.startswith("/") else (md.parent / where) if where else md
            path = path.resolve()
            name = f"{md.relative_to(root)}: ({target})"
            if path not in known and path not in folders:
                bad.append(f"{name} is not a file of the repository" + (" (under the git-ignored logs/)" if "logs" in path.parts else ""))
            elif fragment and path.suffix == ".md" and fragment not in _anchors(path):
                bad.append(f"{name}: {path.name} has no heading with the anchor #{fragment}")
    return bad


def test_every_relative_link_in_the_docs_resolves_inside_the_repository():
    known = _repo_files()
    if known is None:
        pytest.skip("not a git checkout: which files are the repository's is unknown")
    bad = broken_links(_docs(), known)
    assert not bad, "\n".join(bad)


def test_the_link_check_finds_what_it_should(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    page, readme = tmp_path / "docs" / "page.md", tmp_path / "README.md"
    readme.write_text("# Readme\n")
    page.write_text("\n".join([
        "# A page", "## Second (`part`)", "## Second (`part`)",
        "[ok](../README.md#readme) [ok](#a-page) [ok](#second-part-1) [ok](/docs/page.md) [ok](https://example.org/x)",
        "`[no link](nowhere.md)` [bad](nowhere.md) ![bad](../logs/x/runs/1/confusion_matrix.png) [bad](#no-such-heading)",
        "```", "[no link](in-a-code-block.md)", "```",
    ]))
    bad = broken_links([page], {page, readme}, root=tmp_path)
    assert len(bad) == 3, bad
    assert "(nowhere.md) is not a file" in bad[0] and "git-ignored logs/" in bad[1] and "#no-such-heading" in bad[2]


# --- links a report writes -----------------------------------------------------------------------
def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def test_a_report_links_only_what_its_readers_can_open(tmp_path: Path):
    from transferlab.report.links import linkable, run_name, work_tree
    from transferlab.report.markdown import picture_cell

    repo = tmp_path / "repo"
    repo.mkdir()
    try:
        _git(repo, "init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git here")
    (repo / ".gitignore").write_text("/logs/\n")
    ignored = repo / "logs" / "train" / "runs" / "2026-01-01_10-00-00" / "confusion_matrix.png"
    kept = repo / "docs" / "results" / "x" / "confusion_matrix.png"
    outside = tmp_path / "elsewhere" / "confusion_matrix.png"
    for picture in (ignored, kept, outside):
        picture.parent.mkdir(parents=True)
        picture.write_bytes(b"png")
    out = repo / "docs" / "results"
    work_tree.cache_clear()
    assert linkable(ignored, out) is False and linkable(kept, out) is True
    assert linkable(repo / "docs" / "missing.png", out) is False
    assert linkable(outside, out) is False  # exists, but not in the report's work tree

    # In the markdown: the run's name where the picture is ignored, a link where it is not.
    assert picture_cell("../../logs/train/runs/2026-01-01_10-00-00/confusion_matrix.png", out) == "`train/runs/2026-01-01_10-00-00`"
    assert picture_cell("x/confusion_matrix.png", out) == "[confusion_matrix.png](x/confusion_matrix.png)"
    assert picture_cell(None, out) == "not drawn"
    assert run_name("../logs/data_efficiency/multiruns/2026-12-01_15-47-34/3/confusion_matrix.png") == "data_efficiency/multiruns/2026-12-01_15-47-34/3"

    # Outside any work tree (a report beside its runs on the machine that ran them), an existing file is linked.
    if work_tree(str(outside.parent)) is None:
        assert picture_cell("confusion_matrix.png", outside.parent) == "[confusion_matrix.png](confusion_matrix.png)"
