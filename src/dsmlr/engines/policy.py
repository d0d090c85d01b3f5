"""The epoch policy: what each epoch does, and what follows from its objective.

Pure functions of the run's state, the same on every rank (every input is a setting or
an allreduced value), so that all ranks take every decision together:

* :func:`plan_epoch`: whether an epoch (re)anchors SVRG's blocks in a gradient stage and
  whether it scores the exact objective;
* :func:`step_backoff`: the step's shortening after a scored epoch;
* :func:`checkpoint_now`: whether a scored epoch is saved.

Stopping is :class:`dsmlr.engines.base.StoppingRule`'s; centring is the engine's (between
its stages where all blocks are home, or with the scoring allreduce where they never are).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EpochPlan", "checkpoint_now", "plan_epoch", "step_backoff"]


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch does besides its update stage."""

    anchoring: bool  #: a gradient stage anchors the blocks at the current weights
    scoring: bool  #: a scoring stage gives the exact objective (and an exact ``b``)


def plan_epoch(
    epoch: int,
    *,
    max_epochs: int,
    eval_every: int,
    anchored: bool,
    b_exact: bool,
    started: bool,
) -> EpochPlan:
    """The stages of ``epoch`` (counted from 1).

    Parameters
    ----------
    epoch, max_epochs : int
        This epoch and the last one allowed.
    eval_every : int
        Scoring every this many epochs, and after the last.
    anchored : bool
        Whether the update rule takes variance-reduced steps about an anchor (SVRG).
    b_exact : bool
        Whether every row's ``b`` is exact at the current weights: right after a scoring
        stage, or at the start (``-log K`` at zero weights, or scored at given ones).
    started : bool
        Whether training began from given weights (warm start, checkpoint).

    Notes
    -----
    SVRG's anchor gradient helps little far from the optimum, so a run from zero weights
    makes its first epoch a plain stochastic pass, which gets there faster, and scores
    it, so that the second can anchor.  An anchor needs the exact ``b`` at the anchor:
    only an epoch right after a scoring stage (or a start) anchors; the others keep the
    last anchor.
    """
    anchoring = anchored and b_exact and (epoch > 1 or started)
    scoring = epoch % eval_every == 0 or epoch >= max_epochs
    scoring = scoring or (anchored and not started and epoch == 1)
    return EpochPlan(anchoring=anchoring, scoring=scoring)


def step_backoff(backoff: float, objective: float, previous: float | None) -> float:
    """The step's scale after a scored epoch: halved when the objective rose above the
    previous scored one (the step is too long for this data), else unchanged."""
    if previous is not None and objective > previous:
        return backoff * 0.5
    return backoff


def checkpoint_now(epoch: int, max_epochs: int, converged: bool, due: bool) -> bool:
    """Whether a scored epoch is saved: the checkpointer says it is due, or training ends
    with it (converged, or the last epoch allowed)."""
    return converged or epoch == max_epochs or due
