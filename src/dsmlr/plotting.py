"""Training curves of one or more ``--metrics`` files (``dsmlr plot``).

A metrics file holds one JSON object a line, one line per epoch that computed the exact
objective (every epoch, or every ``eval_every``-th and the last; see
:class:`dsmlr.engines.base.EpochRecord`), so curves against epochs use each line's
``epoch``, not its position.  :func:`read_metrics` checks and reads one;
:func:`build_figure` draws several runs into one 2 x 2 figure: objective against wall
time and against epochs, accuracy against wall time and against epochs.  With the
optimum ``F`` of the problem known, the objective panels show the relative
suboptimality ``(f - F) / |F|`` on a log scale, as the DS-MLR paper's figures do.

matplotlib is an optional dependency (``pip install 'dsmlr[plot]'``): it is imported
only inside the functions that draw, so ``import dsmlr`` and ``dsmlr --help`` never
need it.  Figures are drawn on an explicit Agg canvas, without :mod:`matplotlib.pyplot`,
so nothing here changes the backend or the open figures of a caller's session.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsmlr.errors import DataError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MISSING_MATPLOTLIB",
    "REQUIRED_KEYS",
    "build_figure",
    "has_test_accuracy",
    "read_metrics",
    "save_figure",
]

#: Keys every metrics record must have; any others are optional and extra ones ignored.
REQUIRED_KEYS = ("epoch", "time", "objective")

MISSING_MATPLOTLIB = "dsmlr plot needs matplotlib: pip install 'dsmlr[plot]'"

# Beyond ten runs the colour cycle repeats, so the line style changes with each lap.
_LINESTYLES = ("-", "--", ":", "-.")
# Markers make short runs (a single point has no line) visible; long ones get none.
_MARKER_MAX_POINTS = 30


# -- reading -----------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but "objective": true is a broken file, not a number.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a metrics JSONL file written by ``dsmlr train --metrics``.

    Parameters
    ----------
    path : str or path-like
        The file: one JSON object a line.  Blank lines are skipped.

    Returns
    -------
    list of dict
        The records in file order.  Each has numeric ``epoch``, ``time`` and
        ``objective``; other keys (``train_accuracy``, ``test_accuracy``, keys added by
        later versions) are passed through unchecked.

    Raises
    ------
    DataError
        The file cannot be read, holds no records, or a line is not a JSON object with
        the required numeric keys; the message names the file and, where it applies,
        the line.
    """
    name = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", name) from None
    except UnicodeDecodeError:
        raise DataError("not a metrics file (not UTF-8 text)", name) from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not JSON ({exc.msg}, column {exc.colno})", name, number) from None
        if not isinstance(record, dict):
            kind = type(record).__name__
            raise DataError(f"expected a JSON object, got {kind}", name, number)
        for key in REQUIRED_KEYS:
            if key not in record:
                need = ", ".join(REQUIRED_KEYS)
                raise DataError(f"record has no {key!r} (every line needs {need})", name, number)
            if not _is_number(record[key]):
                raise DataError(f"{key!r} is not a number: {record[key]!r}", name, number)
        records.append(record)
    if not records:
        raise DataError("no records (empty metrics file)", name)
    return records


# -- drawing -----------------------------------------------------------------------------


def has_test_accuracy(records: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any record of a run carries a test accuracy (a run trained with a test set)."""
    return any(_is_number(r.get("test_accuracy")) for r in records)


def _series(records: Sequence[Mapping[str, Any]], x: str, y: str) -> tuple[list, list]:
    """``(x, y)`` over the records that have a numeric ``y`` (evaluation may be sparse)."""
    pairs = [(r[x], r[y]) for r in records if _is_number(r.get(y))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _suboptimality(objectives: list[float], optimum: float) -> list[float]:
    # F = 0 (a separable problem without L2) has no relative scale: use the plain gap.
    scale = abs(optimum) if optimum != 0 else 1.0
    return [(f - optimum) / scale for f in objectives]


def _objective_axis(
    objectives: list[list[float]], optimum: float | None
) -> tuple[list[list[float]], str]:
    """The objective panels' values and axis label: the objectives as they are, or
    their relative suboptimality to ``optimum``, values <= 0 drawn at a floor a decade
    below the smallest positive one."""
    if optimum is None:
        return objectives, "training objective (mean log-loss + L2 penalty)"
    objectives = [_suboptimality(values, optimum) for values in objectives]
    positive = [v for values in objectives for v in values if v > 0 and math.isfinite(v)]
    floor = min(positive) / 10 if positive else 1e-12
    clipped = any(v <= 0 for values in objectives for v in values)
    objectives = [[floor if v <= 0 else v for v in values] for values in objectives]
    minus = "\u2212"  # a typographic minus sign reads better than a hyphen
    gap = f"(objective {minus} F) / |F|" if optimum != 0 else f"objective {minus} F"
    # Short lines: a long label runs past the panel's height and is cut off.
    label = f"relative suboptimality\n{gap}, F = {optimum:.6g}"
    if clipped:
        label += f"\n(values ≤ 0 drawn at {floor:.1e})"
    return objectives, label


def _label_axes(axes, obj_label: str, acc_label: str, log: bool) -> None:
    """Axis labels, scales and grids of the four panels (see :func:`build_figure`)."""
    ax_obj_time, ax_obj_epoch, ax_acc_time, ax_acc_epoch = axes
    for ax in (ax_obj_time, ax_obj_epoch):
        ax.set_ylabel(obj_label)
        if log:
            ax.set_yscale("log")
    for ax in (ax_acc_time, ax_acc_epoch):
        ax.set_ylabel(acc_label)
    for ax in (ax_obj_time, ax_acc_time):
        ax.set_xlabel("wall time since training started (s)")
    for ax in (ax_obj_epoch, ax_acc_epoch):
        ax.set_xlabel("epoch (passes over the training data)")
        # Epochs are whole numbers: no ticks at 2.5.
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)


def build_figure(
    runs: Sequence[Sequence[Mapping[str, Any]]],
    labels: Sequence[str],
    *,
    optimum: float | None = None,
    title: str | None = None,
) -> Figure:
    """Draw the training curves of several runs into one 2 x 2 figure.

    Parameters
    ----------
    runs : sequence of record lists
        One list of records per run, as :func:`read_metrics` returns them.
    labels : sequence of str
        One legend entry per run.
    optimum : float, optional
        The optimal objective ``F``.  Given, the objective panels show the relative
        suboptimality ``(f - F) / |F|`` on a log scale (``f - F`` when ``F == 0``);
        values <= 0 (an ``F`` that is not quite the optimum) are drawn at a floor a
        decade below the smallest positive value, and the axis label says so.
    title : str, optional
        Figure title; by default one naming the number of runs.

    Returns
    -------
    matplotlib.figure.Figure
        Panels ``axes[0]`` objective vs wall time, ``axes[1]`` objective vs epoch,
        ``axes[2]`` accuracy vs wall time, ``axes[3]`` accuracy vs epoch, one line per
        run in each (accuracy panels: per run that has the accuracy drawn), and one
        legend below the panels (``fig.legends[0]``).  Test accuracy is drawn when any
        run has it, else train accuracy, and the axis label says which.

    Raises
    ------
    DataError
        matplotlib is not installed.
    ValueError
        ``labels`` does not match ``runs``, or there are no runs.
    """
    if len(labels) != len(runs) or not runs:
        raise ValueError(f"need one label per run, got {len(labels)} for {len(runs)} run(s)")
    try:
        import matplotlib  # noqa: F401  (imported first: it is the one that may be missing)
    except ImportError:
        raise DataError(MISSING_MATPLOTLIB) from None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Constrained layout keeps labels and the outside legend from being cut off.
    fig = Figure(figsize=(11, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # the explicit, non-interactive Agg canvas
    axes = fig.subplots(2, 2).ravel()
    ax_obj_time, ax_obj_epoch, ax_acc_time, ax_acc_epoch = axes

    objectives, obj_label = _objective_axis(
        [_series(records, "time", "objective")[1] for records in runs], optimum
    )

    accuracy_key = "test_accuracy"
    if not any(_is_number(r.get("test_accuracy")) for records in runs for r in records):
        accuracy_key = "train_accuracy"
    acc_label = {
        "test_accuracy": "test accuracy (fraction correct)",
        "train_accuracy": "train accuracy (fraction correct;\nno test set in these runs)",
    }[accuracy_key]

    handles = []
    for i, (records, objective) in enumerate(zip(runs, objectives, strict=True)):
        style = {
            "color": f"C{i % 10}",
            "linestyle": _LINESTYLES[(i // 10) % len(_LINESTYLES)],
            "marker": "o" if len(records) <= _MARKER_MAX_POINTS else None,
            "markersize": 3,
            "linewidth": 1.5,
        }
        times, _ = _series(records, "time", "objective")
        epochs, _ = _series(records, "epoch", "objective")
        (handle,) = ax_obj_time.plot(times, objective, **style)
        ax_obj_epoch.plot(epochs, objective, **style)
        handles.append(handle)
        for ax, x in ((ax_acc_time, "time"), (ax_acc_epoch, "epoch")):
            xs, ys = _series(records, x, accuracy_key)
            if xs:
                ax.plot(xs, ys, **style)

    _label_axes(axes, obj_label, acc_label, log=optimum is not None)

    fig.suptitle(title if title is not None else f"DS-MLR training: {len(runs)} run(s)")
    # One legend for all panels, outside them, so it never covers a curve.  Handles and
    # labels are passed explicitly: matplotlib would hide a label starting with "_".
    fig.legend(handles, list(labels), loc="outside lower center", ncols=min(len(runs), 4))
    return fig


def save_figure(fig: Figure, path: str) -> None:
    """Write ``fig`` to ``path`` atomically, in the format its suffix names (PNG if none).

    The figure goes to a temporary file next to ``path`` that is renamed into place, so
    a reader never sees a half-written image and a failed write leaves an older figure
    intact.  A device or pipe (``/dev/stdout``) is written directly.

    Raises
    ------
    DataError
        The suffix names no format matplotlib can write, or the file cannot be written.
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    supported = fig.canvas.get_supported_filetypes()
    if suffix and suffix not in supported:
        known = ", ".join(f".{ext}" for ext in sorted(supported))
        raise DataError(f"unknown figure format '.{suffix}' (use one of {known})", path)
    fmt = suffix or "png"
    try:
        if Path(path).exists() and not Path(path).is_file():
            fig.savefig(path, format=fmt)
            return
        target = Path(path).resolve()  # through a symlink: replace the file, not the link
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            fig.savefig(tmp, format=fmt)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise DataError(f"cannot write: {exc.strerror or exc}", path) from None
