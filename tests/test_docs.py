"""Every worked example in docs/*.md runs here, so the manual cannot drift away from the code.

What a fenced block's info string means:

- ```` ```python ````: run. The python blocks of a page share one namespace and run in this process, in page
  order (tracebacks name the page and its line).
- ```` ```bash ````: run by ``bash -euo pipefail``, in page order; ``modbind``, ``python`` and ``pip`` are this
  environment's.
- ```` ```<lang> file=PATH ````: not run; its text is written to ``PATH`` (relative to the page's folder) when the
  page reaches it, e.g. ```` ```yaml file=recipe.yaml ````: the recipes, manifests and plugin sources an example uses.
- ```` ```python norun ```` / ```` ```bash norun ````: an illustration that keeps its highlighting (a fragment of a
  bigger program), never run.
- anything else (```` ```console ````, ```` ```text ````, ```` ```yaml ````, a bare fence, ...): an illustration,
  never run. ```` ```console ```` marks commands that need what a test cannot have (real datasets, GPUs, a network).

Each page runs in its own empty folder, the working directory of both kinds of blocks, with
``OMP_NUM_THREADS=1``, ``MODBIND_CACHE_DIR`` inside that folder and no network (``HF_HUB_OFFLINE=1`` and the
suite's socket guard). ``pip install ./pkg`` in a bash block installs into ``<folder>/site`` (no index, no
dependencies, no build isolation), which is on ``PYTHONPATH`` and ``sys.path``: a plugin an example installs is
visible to its later commands and never reaches this environment. Every page has at least one runnable block.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
RUNNABLE = ("python", "bash")
FENCE = re.compile(r"^```(?P<info>[^`]*)$")
FILE_TARGET = re.compile(r"(?:^|\s)file=(?P<path>\S+)")
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: its info string's first word, an optional ``file=`` target, its text."""

    language: str
    file: str | None
    text: str
    line: int
    """Line of the page where the block's text starts (1-based)."""
    norun: bool = False

    @property
    def runnable(self) -> bool:
        return self.file is None and not self.norun and self.language in RUNNABLE


def fenced_blocks(page: Path) -> list[Block]:
    """The page's fenced blocks in order; an unclosed fence is an error naming its line."""
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    opened: tuple[str, int] | None = None
    body: list[str] = []
    for number, line in enumerate(lines, start=1):
        match = FENCE.match(line)
        if opened is None:
            if match:
                opened, body = (match["info"].strip(), number + 1), []
        elif line == "```":
            info, start = opened
            target = FILE_TARGET.search(info)
            words = info.split()
            blocks.append(Block(words[0] if words else "", target["path"] if target else None,
                                "\n".join(body) + "\n", start, norun="norun" in words[1:]))
            opened = None
        else:
            body.append(line)
    if opened is not None:
        raise AssertionError(f"{page.name}:{opened[1] - 1}: fenced block is never closed")
    return blocks


def page_environment(folder: Path) -> dict[str, str]:
    """The environment of a page's bash blocks (see the module docstring)."""
    site = folder / "site"
    # an in-process run earlier in this session leaves its one-rank group's variables behind; a user's shell has none
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.update({
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MODBIND_CACHE_DIR": str(folder / "cache"),
        "PIP_TARGET": str(site),
        "PIP_NO_INDEX": "1",
        "PIP_NO_DEPS": "1",
        "PIP_NO_BUILD_ISOLATION": "0",  # pip reads this negated option inverted: "0" switches isolation off
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def run_python(block: Block, namespace: dict[str, object], page: Path) -> None:
    from modbind.plugins import reset_registry

    importlib.invalidate_caches()  # a plugin a bash block just installed becomes importable
    reset_registry()  # ... and discoverable
    code = compile("\n" * (block.line - 1) + block.text, str(page), "exec")
    exec(code, namespace)  # noqa: S102 - the documentation's own examples


def run_bash(block: Block, folder: Path, env: dict[str, str], page: Path) -> None:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"{page.name}:{block.line}: bash block failed with exit status {done.returncode}\n"
                    f"--- block ---\n{block.text}--- stdout (end) ---\n{done.stdout[-3000:]}\n"
                    f"--- stderr (end) ---\n{done.stderr[-3000:]}", pytrace=False)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_worked_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread) -> None:
    blocks = fenced_blocks(page)
    assert any(b.runnable for b in blocks), f"{page.name} has no runnable example (```python or ```bash block)"
    env = page_environment(tmp_path)
    for key in ("OMP_NUM_THREADS", "MODBIND_CACHE_DIR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    namespace: dict[str, object] = {"__name__": "__main__"}
    try:
        for block in blocks:
            if block.file is not None:
                target = tmp_path / block.file
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.text, encoding="utf-8")
            elif block.runnable and block.language == "python":
                run_python(block, namespace, page)
            elif block.runnable and block.language == "bash":
                run_bash(block, tmp_path, env, page)
    finally:
        from modbind.plugins import reset_registry

        reset_registry()  # the page's own plugins leave with its folder


def test_fence_convention_is_read_as_documented(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("text\n```python\nx = 1\n```\n```yaml file=conf/r.yaml\na: 1\n```\n"
                    "```console\nmodbind align\n```\n```\nbare\n```\n```bash\nmodbind plugins\n```\n"
                    "```python norun\nimport my_plugin\n```\n", encoding="utf-8")
    blocks = fenced_blocks(page)
    assert [(b.language, b.file, b.runnable, b.line) for b in blocks] == [
        ("python", None, True, 3), ("yaml", "conf/r.yaml", False, 6), ("console", None, False, 9),
        ("", None, False, 12), ("bash", None, True, 15), ("python", None, False, 18)]
    assert blocks[1].text == "a: 1\n"
    page.write_text("```python\nx = 1\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="page.md:1: fenced block is never closed"):
        fenced_blocks(page)


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    prose = re.sub(r"^```.*?^```$", "", page.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#+\s+(.+?)\s*$", prose, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", [REPO / "README.md", *PAGES], ids=["README.md", *[p.name for p in PAGES]])
def test_relative_links_point_to_files_and_headings_that_exist(page: Path) -> None:
    broken = []
    for match in LINK.finditer(page.read_text(encoding="utf-8")):
        target, _, anchor = match["target"].partition("#")
        if re.match(r"^[a-z]+:", target):
            continue  # a URL
        path = page.parent / target if target else page
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in heading_anchors(path)):
            broken.append(match["target"])
    assert not broken, f"{page.name} links to missing files or headings: {', '.join(broken)}"
