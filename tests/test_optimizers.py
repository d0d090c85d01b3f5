"""The update-rule registry (dsmlr.engines.optimizers)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from dsmlr.engines import OPTIMIZERS
from dsmlr.engines.optimizers import UPDATE_RULES, update_rule

SRC = Path(__file__).resolve().parents[1] / "src" / "dsmlr"


def test_steps():
    svrg, adagrad, sgd = (update_rule(n) for n in ("svrg", "adagrad", "sgd"))
    assert svrg.step(2.0, 4.0, epoch=9) == 0.5  # constant
    assert sgd.step(2.0, 4.0, epoch=9) == pytest.approx(0.5 / 3)  # 1/sqrt(epoch)
    assert adagrad.step(2.0, 4.0, epoch=9) == 2.0  # its own scale
    assert math.isclose(sgd.step(1.0, 1.0, epoch=1), 1.0)


def test_what_a_block_holds_and_carries():
    assert update_rule("svrg").model_arrays(tables=False) == 3
    assert update_rule("svrg").model_arrays(tables=True) == 2
    assert update_rule("sgd").model_arrays(tables=False) == 1
    assert update_rule("adagrad").carry == ("acc",)
    assert update_rule("adagrad").carried_bytes(10) == 80
    assert update_rule("svrg").carry == () and update_rule("svrg").carried_bytes(10) == 0


def test_names_and_errors():
    assert OPTIMIZERS == tuple(UPDATE_RULES) and OPTIMIZERS[0] == "svrg"
    with pytest.raises(ValueError, match="choose one of"):
        update_rule("adam")


def test_no_rule_name_is_compared_outside_the_registry():
    """Code asks a rule's properties; a comparison with a rule's name is a second place
    that would have to learn a new rule."""
    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "optimizers.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    if isinstance(side, ast.Constant) and side.value in UPDATE_RULES:
                        found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found
