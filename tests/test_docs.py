"""The commands and code in the docs run as written, so the docs cannot rot.

Every fenced ``bash`` and ``python`` block of README.md and docs/*.md runs, in order, in
one scratch directory per document (so a block may use the files an earlier one wrote),
with this environment's ``dsmlr`` and ``mpiexec`` first on PATH.  Pages without such
blocks (the API and command-line references, which the documentation site generates)
have nothing to run.  A block can be
preceded by a directive comment:

``<!-- docs-test: skip: REASON -->``
    not run (it needs several machines, root or a batch system); the reason is required.
``<!-- docs-test: repo-copy -->``
    run verbatim in a fresh copy of the repository (the Quick start: it makes its own
    virtual environment and installs the package from PyPI's registry).
``<!-- docs-test: ci-command -->``
    the test-suite command: checked to be what ``.ci/run`` runs (running it here would
    run this suite inside itself).
``<!-- docs-test: mpiexec=N prelude=NAME check=NAME -->``
    a Python fragment: run after the named prelude (which defines the variables the
    fragment assumes), under ``mpiexec -n N`` if given, then the named check.

``pip install`` lines are not run again: this environment was installed with the
``dev,mpi,gpu`` extras, which include every extra the docs install (checked).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=str(BIN)) or shutil.which("mpiexec")

# A fence's info string: a language (``bash``), or a MyST directive (``{eval-rst}``),
# which the site builds and this test leaves alone.
FENCE = re.compile(r"^```(\w*|\{[\w-]+\})\s*$")
DIRECTIVE = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->\s*$")

#: Definitions a Python fragment assumes, run before it.
PRELUDES = {
    # Each rank's rows of a small problem, for the fit_sharded fragment.
    "rank-rows": """
import numpy as np
from dsmlr import make_extreme_multiclass
from dsmlr.comm.mpi import MPIComm
from dsmlr.training import shard_rows
_p = make_extreme_multiclass(1200, 300, 20, nnz_per_row=20, random_state=0)
_c = MPIComm()
_train = shard_rows(_p.X[:1000], _p.y[:1000], _c.size, True)[_c.rank]
_test = shard_rows(_p.X[1000:], _p.y[1000:], _c.size, True)[_c.rank]
X_mine, y_mine, X_test_mine, y_test_mine = _train.X, _train.y, _test.X, _test.y
""",
    # The README's test rows, with the columns of the exported model.
    "model-rows": """
import numpy as np
import scipy.sparse as sp
from dsmlr.io import load_dataset
_D = np.load("demo-model.npz", allow_pickle=False)["coef"].shape[1]
_X = load_dataset("demo.test.svm").X
X = sp.csr_matrix((_X.data, _X.indices, _X.indptr), shape=(_X.shape[0], max(_D, _X.shape[1])))
X = X[:, :_D]
""",
}

#: Checks run after a fragment, in its namespace.
CHECKS = {
    "export": """
from dsmlr import load_model
assert (labels == load_model("demo-model").predict(X)).all(), "plain numpy disagrees"
""",
    "sharded": """
import os
assert os.path.exists("model-dir/manifest.json")
""",
}


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    directive: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    def option(self, name: str) -> str | None:
        match = re.search(rf"(?:^|\s){name}=(\S+)", self.directive)
        return match.group(1) if match else None


def blocks(doc: Path) -> list[Block]:
    """The ``bash`` and ``python`` fenced blocks of ``doc``, with their directives."""
    out: list[Block] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        directive = DIRECTIVE.match(before)
        if fence.group(1) in ("bash", "python"):
            out.append(Block(doc, i + 1, fence.group(1), "\n".join(lines[i + 1 : end]) + "\n",
                             directive.group(1) if directive else ""))  # fmt: skip
        i = end + 1
    return out


def _env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def _extras() -> set[str]:
    return set(importlib.metadata.metadata("dsmlr").get_all("Provides-Extra") or [])


def _without_pip(code: str) -> str:
    """The block with its ``pip install`` lines dropped (after checking their extras)."""
    kept = []
    for line in code.splitlines():
        if line.strip().startswith("pip install"):
            for group in re.findall(r"\[([\w,-]+)\]", line):
                assert set(group.split(",")) <= {"dev", "mpi", "gpu"} & _extras(), line
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def _run(block: Block, cwd: Path, timeout: float = 600) -> None:
    if block.lang == "bash":
        cmd = ["bash", "-euo", "pipefail", "-c", _without_pip(block.code)]
    else:
        script = cwd / f"snippet_{block.line}.py"
        prelude = PRELUDES[block.option("prelude")] if block.option("prelude") else ""
        check = CHECKS[block.option("check")] if block.option("check") else ""
        script.write_text(prelude + "\n" + block.code + "\n" + check)
        cmd = [sys.executable, str(script)]
        if block.option("mpiexec"):
            assert MPIEXEC is not None, "mpiexec missing: pip install '.[mpi]'"
            cmd = [MPIEXEC, "-n", block.option("mpiexec"), *cmd]
    run = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                         timeout=timeout)  # fmt: skip
    assert run.returncode == 0, f"{block.where} failed:\n{block.code}\n{run.stdout}\n{run.stderr}"


def test_every_block_runs_or_says_why_not():
    found = [b for doc in DOCS for b in blocks(doc)]
    assert len(found) > 10
    known = re.compile(r"^(skip: \S.*|repo-copy|ci-command|((mpiexec|prelude|check)=\S+\s*)*)$")
    for b in found:
        assert known.match(b.directive), f"{b.where}: unknown directive {b.directive!r}"
        for name, table in (("prelude", PRELUDES), ("check", CHECKS)):
            assert b.option(name) is None or b.option(name) in table, b.where


@pytest.mark.parametrize("doc", [d for d in DOCS if blocks(d)], ids=lambda p: p.name)
def test_doc_blocks_run_in_order(doc, tmp_path):
    ran = 0
    for block in blocks(doc):
        if block.directive.startswith(("skip:", "repo-copy", "ci-command")):
            continue
        _run(block, tmp_path)
        ran += 1
    assert ran > 0


def _special(directive: str) -> Block:
    (block,) = [b for doc in DOCS for b in blocks(doc) if b.directive == directive]
    return block


def test_the_test_command_is_what_ci_runs():
    documented = _special("ci-command").code.strip()
    ci = (ROOT / ".ci" / "run").read_text()
    install = re.search(r"pip install -q -e '\.\[[\w,]+\]'[^&]*", documented).group(0).strip()
    assert install in ci
    assert documented.endswith("pytest -q") and re.search(r"^\S*/pytest -q$", ci, re.M)


def test_quick_start_runs_verbatim_in_a_fresh_copy(tmp_path):
    """The README's first command, as a new user runs it: a new virtual environment, the
    package installed from the repository, then generate, train and evaluate."""
    block = _special("repo-copy")
    copy = tmp_path / "dsmlr"
    # The files a clone has: tracked ones, and new ones git does not ignore.
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=copy,
                         capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert run.returncode == 0, f"{block.where}:\n{run.stdout}\n{run.stderr}"
    assert "accuracy" in run.stdout and (copy / "demo-model" / "manifest.json").exists()
