"""What ``dsmlr`` shows while it reads data and trains.

On a terminal: a progress bar per epoch (tqdm, on stderr) with the class-block visits made
(SVRG's anchor gradient, the updates, the scoring), elapsed time, the epoch's ETA and the
latest objective and accuracies, above which each finished epoch leaves one line.
Elsewhere (CI logs, Slurm output files, pipes) only the plain epoch lines, since a redrawn
bar would fill a log file with carriage returns.  The same object writes the ``--metrics``
JSON lines.  :class:`ReadingProgress` is the bar of the bytes parsed while a data file
is read (terminals only, like the epoch bar): a multi-gigabyte file takes minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import IO, TypeVar

from tqdm import tqdm

from dsmlr.engines import format_epoch

__all__ = ["ReadingProgress", "TrainingProgress"]


_Owner = TypeVar("_Owner", bound="_BarOwner")


class _BarOwner:
    """What the bars share: a tqdm bar made on first use, removed by :meth:`close` (or
    leaving a ``with`` block, also on error)."""

    _bar: tqdm | None = None

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self: _Owner) -> _Owner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TrainingProgress(_BarOwner):
    """The training callback of the CLI: ``__call__`` per epoch, ``progress`` per visit.

    An epoch's bar counts the visits of class blocks to this rank's rows, each one a
    pass over them (of the anchor gradient, the updates or the scoring), as the engine
    reports them (:attr:`dsmlr.engines.Monitor.on_visit`).

    Parameters
    ----------
    quiet : bool
        No bar and no epoch lines (the metrics file is still written).
    metrics : text file, optional
        Receives each record (one per epoch with an exact objective: every
        ``eval_every``-th and the last) as one JSON line, flushed at once, so a run that
        is killed keeps every finished record.
    prefix : str
        Put before every epoch line (``"rank 2: "`` when every MPI rank reports); with
        a prefix the line also gives this rank's compute, communication and wait
        seconds, which differ between ranks.
    bar : bool, optional
        Draw the bar; default: when ``stream`` is a terminal and not ``quiet``.
    stream : text file, optional
        Where the bar goes (default ``sys.stderr``); epoch lines go to stdout.
    """

    def __init__(
        self,
        *,
        quiet: bool = False,
        metrics: IO[str] | None = None,
        prefix: str = "",
        bar: bool | None = None,
        stream: IO[str] | None = None,
    ) -> None:
        self.quiet = quiet
        self.metrics = metrics
        self.prefix = prefix
        self.stream = sys.stderr if stream is None else stream
        if bar is None:
            bar = not quiet and _is_terminal(self.stream)
        self.show_bar = bar
        self._bar: tqdm | None = None
        self._bar_epoch = 0
        self._postfix: dict[str, str] = {}

    def __call__(self, entry: dict) -> None:
        """One finished epoch's history entry (:meth:`EpochRecord.as_dict`)."""
        self._postfix = {"objective": f"{entry['objective']:.5g}",
                         "train acc": f"{entry['train_accuracy']:.4f}"}  # fmt: skip
        if "test_accuracy" in entry:
            self._postfix["test acc"] = f"{entry['test_accuracy']:.4f}"
        if not self.quiet:
            line = self.prefix + format_epoch(entry)
            if self.prefix:
                seconds = [entry.get(f"{k}_seconds", 0.0) for k in ("compute", "comm", "wait")]
                line += "  compute {:.2f}s  comm {:.2f}s  wait {:.2f}s".format(*seconds)
            if self._bar is not None:
                self._bar.n = self._bar.total
                self._bar.set_postfix(self._postfix, refresh=True)
                tqdm.write(line, file=sys.stdout)
            else:
                # One write per line: under mpiexec with every rank reporting, lines
                # from different ranks then never interleave mid-line.
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        if self.metrics is not None:
            self.metrics.write(json.dumps(entry) + "\n")
            self.metrics.flush()

    def progress(self, epoch: int, done: int, total: int) -> None:
        """``done`` of ``total`` block visits of ``epoch`` are finished (rank 0's)."""
        if not self.show_bar:
            return
        if self._bar is None:
            # A terminal that reports its size as 0 x 0 (some ptys) gets 100 x 24: with
            # tqdm's own sizing the bar would be 0 wide and below the screen's last line,
            # so never drawn.
            size = shutil.get_terminal_size((100, 24))
            self._bar = tqdm(
                total=total, unit="visit", file=self.stream,
                ncols=size.columns, nrows=size.lines, leave=False, desc=f"epoch {epoch}",
            )  # fmt: skip
            self._bar_epoch = epoch
        elif epoch != self._bar_epoch:
            self._bar.set_description(f"epoch {epoch}", refresh=False)
            self._bar.set_postfix(self._postfix, refresh=False)
            self._bar.reset(total=total)
            self._bar_epoch = epoch
        self._bar.n = min(done, total)
        self._bar.refresh()


class ReadingProgress(_BarOwner):
    """A bar of the bytes parsed while ``path`` is read: pass it as ``progress`` to
    :func:`dsmlr.io.load_dataset` or :func:`dsmlr.io.read_dataset_shard`.

    Parameters
    ----------
    path : str
        The file (its name labels the bar).
    show : bool, optional
        Draw the bar; default: when ``stream`` is a terminal.
    stream : text file, optional
        Where the bar goes (default ``sys.stderr``).
    """

    def __init__(self, path: str, *, show: bool | None = None, stream: IO[str] | None = None):
        self.stream = sys.stderr if stream is None else stream
        self.show = _is_terminal(self.stream) if show is None else show
        self.name = os.path.basename(path)
        self._bar: tqdm | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if not self.show:
            return
        if self._bar is None:
            self._bar = tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, file=self.stream,
                leave=False, desc=f"reading {self.name}", mininterval=0.5,
            )  # fmt: skip
        self._bar.update(done - self._bar.n)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real file
        return False
