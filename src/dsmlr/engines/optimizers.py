"""The update rules, by name: what each needs of an epoch, and what its state costs.

Every place that depends on the update rule (the epoch loop, the step size, the memory
check, ``dsmlr plan``, checkpoints) asks the rule's :class:`UpdateRule` here rather than
comparing its name:

* ``"svrg"`` (the default): variance-reduced steps about an *anchor*, the weights at the
  last gradient stage and their full gradient, which travel with the blocks (or the
  anchor as the ranks' probability tables, :mod:`dsmlr.kernels.anchor_table`); a
  constant step; its moves are relaxed where several ranks move blocks at once
  (:mod:`dsmlr.engines.relaxation`).
* ``"adagrad"``: per-feature step scales from each block's accumulated squared
  gradients (``acc``, float64, one a block's feature), which travel with the block.
* ``"sgd"``: the DS-MLR paper's plain steps, decaying as ``1 / sqrt(epoch)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["UPDATE_RULES", "UpdateRule", "update_rule"]


@dataclass(frozen=True)
class UpdateRule:
    """One update rule's properties (see module docstring).

    Attributes
    ----------
    name : str
        Its name in :data:`UPDATE_RULES`.
    anchored : bool
        Variance-reduced steps about an anchor: epochs right after a scoring stage run
        a gradient stage, and the moves are relaxed between ranks.
    adaptive : bool
        Per-feature step scales from accumulated squared gradients.
    decaying : bool
        The step shrinks as ``1 / sqrt(epoch)``.
    """

    name: str
    anchored: bool = False
    adaptive: bool = False
    decaying: bool = False

    @property
    def carry(self) -> tuple[str, ...]:
        """The arrays of a block, besides its weights, that travel and are checkpointed
        with it."""
        return ("acc",) if self.adaptive else ()

    def step(self, eta: float, curvature: float, epoch: int) -> float:
        """The step before back-off and the mini-batch gain: ``eta`` in units of
        ``1 / curvature`` (the mean squared row norm), AdaGrad's raw."""
        if self.adaptive:
            return eta  # AdaGrad scales its own steps
        step = eta / curvature
        return step / math.sqrt(epoch) if self.decaying else step

    def block_arrays(self, tables: bool) -> tuple[str, ...]:
        """The arrays a block holds, by their :class:`~dsmlr.engines.ring.Block` names:
        the weights, for SVRG the anchor gradient and, unless the anchor is held as
        ``tables``, the anchor weights, and what is carried."""
        anchor = ("mean_grad",) + (() if tables else ("W_anchor",)) if self.anchored else ()
        return ("W", *anchor, *self.carry)

    def model_arrays(self, tables: bool) -> int:
        """Model-sized arrays a block holds (in the weights' dtype): its
        :meth:`block_arrays` but what is carried."""
        return len(self.block_arrays(tables)) - len(self.carry)

    def carried_bytes(self, n_columns: int) -> int:
        """Bytes a block carries besides model-sized arrays (AdaGrad's float64 ``acc``)."""
        return 8 * n_columns if self.adaptive else 0


#: The update rules by name, the default first.
UPDATE_RULES: dict[str, UpdateRule] = {
    "svrg": UpdateRule("svrg", anchored=True),
    "adagrad": UpdateRule("adagrad", adaptive=True),
    "sgd": UpdateRule("sgd", decaying=True),
}


def update_rule(name: str) -> UpdateRule:
    """The rule registered as ``name``; a ValueError naming the choices otherwise."""
    try:
        return UPDATE_RULES[name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of {sorted(UPDATE_RULES)}"
        ) from None
