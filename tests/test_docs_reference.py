"""Statements in the docs that could drift from the code are checked against it.

* docs/cli.md's table of ``dsmlr train`` options and ``DSMLRClassifier`` parameters:
  its names and defaults against the parser and ``get_params()``, and that each option
  sets the parameter the table names;
* every help text that gives a default in parentheses gives the parser's default;
* the estimator's docstring documents every parameter it has;
* the README's and the pages' links to files of the repository resolve;
* no page narrates the project's history (dated measurements live in
  ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from dsmlr import DSMLRClassifier
from dsmlr.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CLI_PAGE = ROOT / "docs" / "cli.md"
NONE = "—"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _train_actions() -> dict[str, argparse.Action]:
    """``dsmlr train``'s arguments by the name the table uses (``--lam``, ``TRAIN``)."""
    out = {}
    for action in _subparsers()["train"]._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        out[action.option_strings[-1] if action.option_strings else action.metavar] = action
    return out


def _code(cell: str) -> str | None:
    """The first code span of a table cell, or None."""
    match = re.search(r"`([^`]+)`", cell)
    return match.group(1) if match else None


def _default(cell: str):
    """A default cell as a Python value: ``off`` a flag's False, else its code span."""
    if cell == "off":
        return False
    return ast.literal_eval(_code(cell))


def train_table() -> list[list[str]]:
    """The rows of the options-and-parameters table of docs/cli.md, as cells."""
    lines = CLI_PAGE.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| `dsmlr train` |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert rows and all(len(row) == 4 for row in rows)
    return rows


def test_train_table_lists_every_option_with_the_parser_default():
    actions = _train_actions()
    listed = {}
    for option, default, _, _ in train_table():
        if option == NONE:
            assert default == NONE
            continue
        name = _code(option)
        assert name not in listed, f"{name} twice"
        listed[name] = default
    assert set(listed) == set(actions), "the table and `dsmlr train --help` differ"
    for name, cell in listed.items():
        action = actions[name]
        if action.required:
            assert cell == "required", name
        elif isinstance(action, argparse._StoreTrueAction):
            assert cell == "off", name
        else:
            assert _default(cell) == action.default, (
                f"{name}: table {cell}, parser {action.default!r}"
            )


def test_train_table_lists_every_parameter_with_its_default():
    params = DSMLRClassifier().get_params()
    listed = {}
    for _, _, param, default in train_table():
        name = _code(param) if param != NONE else None
        if name is None or not re.fullmatch(r"\w+", name):  # a method call, an attribute
            assert default == NONE, param
            continue
        assert name in params, f"{name} is no DSMLRClassifier parameter"
        assert name not in listed, f"{name} twice"
        listed[name] = _default(default)
    assert listed == params


def test_each_train_option_sets_the_parameter_the_table_names(tmp_path, monkeypatch):
    """Run ``dsmlr train`` with a value other than the default for every option that the
    table maps to a parameter, and catch the estimator it builds before it trains."""
    import dsmlr.estimator

    built = {}

    class Stop(Exception):
        pass

    class Catch(DSMLRClassifier):
        def fit(self, *args, **kwargs):
            built.update(self.get_params())
            raise Stop

    monkeypatch.setattr(dsmlr.estimator, "DSMLRClassifier", Catch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.svm").write_text("0 1:1\n1 2:1\n2 1:1 2:1\n")

    samples = {  # a value other than the default, for options that take one
        "--lam": "0.5", "--epochs": "7", "--tol": "0.01", "--workers": "3", "--eta": "0.5",
        "--batch-size": "4", "--device": "cuda:1", "--blocks-per-rank": "2",
        "--eval-every": "3", "--seed": "5", "--checkpoint-dir": "ck",
        "--checkpoint-every": "2",
    }  # fmt: skip
    actions = _train_actions()
    argv, expected = ["train", "train.svm", "--quiet"], {}
    for option, _, param, _ in train_table():
        name, target = _code(option), _code(param) if param != NONE else None
        if option == NONE or target is None or not re.fullmatch(r"\w+", target):
            continue
        action = actions[name]
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(name)
            value = True
        elif action.choices is not None:
            choice = next(c for c in action.choices if c != action.default)
            argv += [name, choice]
            value = choice
        else:
            assert name in samples, f"add a sample value for {name} to this test"
            argv += [name, samples[name]]
            value = action.type(samples[name]) if action.type else samples[name]
        expected[target] = (not value) if "(negated)" in param else value
    with pytest.raises(Stop):
        main(argv)
    assert {k: built[k] for k in expected} == expected


def _help_default(text: str) -> str | None:
    """The default a help text names in parentheses at its end, e.g. ``(1e-4)``."""
    match = re.search(r"\((?:default:? )?([\w.:+-]+)\)$", text.strip())
    return match.group(1) if match else None


def test_help_texts_give_the_parser_defaults():
    """``--lam ... help="L2 strength (1e-4)"``: the parenthesis names the default."""
    checked = 0
    for command, parser in _subparsers().items():
        for action in parser._actions:
            named = _help_default(action.help or "")
            if named is None or action.default is None or isinstance(action.default, bool):
                continue
            convert = action.type or str
            try:
                value = convert(named)
            except (argparse.ArgumentTypeError, TypeError, ValueError):
                continue  # words, not a value: "(random)"
            default = convert(action.default) if isinstance(action.default, str) else action.default
            assert value == default, (
                f"dsmlr {command} {action.option_strings[-1]}: help says {named}"
            )
            checked += 1
    assert checked > 10


def test_the_estimator_documents_every_parameter():
    from numpydoc.docscrape import ClassDoc

    doc = ClassDoc(DSMLRClassifier)
    params = DSMLRClassifier().get_params()
    names = [p.name for p in doc["Parameters"]]
    assert sorted(names) == sorted(params), "Parameters section and get_params() differ"
    for p in doc["Parameters"]:
        match = re.search(r"default=(.+)$", p.type)
        assert match, f"{p.name}: no default in {p.type!r}"
        assert ast.literal_eval(match.group(1)) == params[p.name], p.name
    attributes = {a.name for a in doc["Attributes"]}
    assert {"coef_", "intercept_", "classes_", "n_iter_", "history_"} <= attributes


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_to_repository_files_resolve(doc):
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{doc.name}: {target} does not exist"


#: Words that tell the project's history rather than what the code does.
HISTORY = re.compile(
    r"\b(now|no longer|used to|had (stalled|been)|older kernels?|before (this|the) change|"
    r"earlier (run|runs|validation|kernels?)|not yet|not re-measured|made .{1,40} shorter)\b",
    re.IGNORECASE,
)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_page_narrates_history(doc):
    text = doc.read_text(encoding="utf-8")
    found = [m.group(0) for m in HISTORY.finditer(text)]
    assert not found, f"{doc.name}: {found}"


def test_plan_options_mirror_train_options():
    """docs/cost-model.md: ``dsmlr plan``'s options "mirror ``dsmlr train``'s"."""
    train, plan = (
        {a.option_strings[-1]: a for a in _subparsers()[name]._actions if a.option_strings}
        for name in ("train", "plan")
    )
    shared = ["--optimizer", "--dtype", "--engine", "--blocks-per-rank", "--eval-every",
              "--no-intercept"]  # fmt: skip
    text = (ROOT / "docs" / "cost-model.md").read_text(encoding="utf-8")
    for option in shared:
        assert f"`{option}`" in text
        assert plan[option].default == train[option].default, option
        assert list(plan[option].choices or []) == list(train[option].choices or []), option
