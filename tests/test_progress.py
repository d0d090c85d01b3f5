"""Training progress: the per-visit hook of the engines, the bar on a terminal, plain
lines elsewhere, and the metrics lines."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from dsmlr import DSMLRClassifier
from dsmlr.progress import TrainingProgress
from problems import planted_sparse_problem


class Recorder:
    """A fit callback with a ``progress`` method, as the CLI's progress display has."""

    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.visits: list[tuple[int, int, int]] = []

    def __call__(self, entry: dict) -> None:
        self.entries.append(entry)

    def progress(self, epoch: int, done: int, total: int) -> None:
        self.visits.append((epoch, done, total))


@pytest.mark.parametrize(("engine", "workers"), [("sync", 1), ("sync", 3), ("async", 2)])
def test_engines_report_every_block_visit(engine, workers):
    X, y = planted_sparse_problem(n_samples=300, n_features=40, n_classes=8, seed=1)
    rec = Recorder()
    DSMLRClassifier(1e-3, max_epochs=3, tol=0, n_workers=workers, engine=engine,
                    random_state=0).fit(X, y, callback=rec)  # fmt: skip
    assert [e["epoch"] for e in rec.entries] == [1, 2, 3]
    epochs = sorted({v[0] for v in rec.visits})
    assert epochs == [1, 2, 3]
    for epoch in epochs:
        done = [d for e, d, _ in rec.visits if e == epoch]
        total = {t for e, _, t in rec.visits if e == epoch}
        assert len(total) == 1 and done == sorted(done) and done[0] >= 1
        assert max(done) <= total.pop()
    if engine == "sync":
        # Worker 0 is visited by each of the P blocks once per stage, and reports each
        # visit: the update and scoring stages in the first epoch, SVRG's anchor gradient
        # too from the second.
        assert [d for e, d, _ in rec.visits if e == 1] == list(range(1, 2 * workers + 1))
        assert [d for e, d, _ in rec.visits if e == 2] == list(range(1, 3 * workers + 1))
    else:  # each of the B = 4 blocks comes to every rank for its anchor gradient and
        # its scoring, whatever the timing does with the update visits
        for epoch in (2, 3):
            assert len([d for e, d, _ in rec.visits if e == epoch]) >= 2 * 4


def test_plain_lines_and_metrics_when_not_a_terminal(capsys):
    metrics = io.StringIO()
    stream = io.StringIO()  # not a terminal: no bar
    show = TrainingProgress(metrics=metrics, stream=stream)
    show.progress(1, 1, 4)
    entry = {"epoch": 1, "time": 0.5, "objective": 0.75, "train_accuracy": 0.5,
             "test_accuracy": 0.25, "test_top5_accuracy": 0.5}  # fmt: skip
    show(entry)
    show.close()
    out = capsys.readouterr().out
    assert "epoch    1" in out and "objective 0.75" in out and "test acc 0.2500" in out
    assert stream.getvalue() == ""
    assert json.loads(metrics.getvalue()) == entry


def test_bar_shows_visits_epoch_and_latest_figures(capsys):
    stream = io.StringIO()
    show = TrainingProgress(bar=True, stream=stream)
    show.progress(1, 1, 4)
    show({"epoch": 1, "time": 0.5, "objective": 0.6931, "train_accuracy": 0.5})
    show.progress(2, 2, 4)
    show.close()
    drawn = stream.getvalue()
    assert "epoch 1" in drawn and "epoch 2" in drawn
    assert "1/4 [" in drawn and "2/4 [" in drawn  # block visits made of the epoch's
    assert "objective=0.6931" in drawn and "train acc=0.5000" in drawn
    assert "<" in drawn  # elapsed<remaining
    assert "epoch    1" in capsys.readouterr().out


def test_quiet_prints_nothing_but_keeps_metrics(capsys):
    metrics = io.StringIO()
    show = TrainingProgress(quiet=True, metrics=metrics, stream=io.StringIO())
    assert not show.show_bar
    show.progress(1, 1, 2)
    show({"epoch": 1, "time": 0.1, "objective": 1.0, "train_accuracy": 0.0})
    assert capsys.readouterr().out == ""
    assert len(metrics.getvalue().splitlines()) == 1


def test_prefix_marks_each_rank_line_with_its_own_timings(capsys):
    show = TrainingProgress(prefix="rank 2: ", stream=io.StringIO())
    show({"epoch": 3, "time": 0.1, "objective": 1.0, "train_accuracy": 0.0,
          "compute_seconds": 1.5, "comm_seconds": 0.25, "wait_seconds": 0.125})  # fmt: skip
    line = capsys.readouterr().out
    assert line.startswith("rank 2: epoch    3")
    assert line.rstrip().endswith("compute 1.50s  comm 0.25s  wait 0.12s")


def test_held_out_top5_accuracy_is_recorded_each_epoch():
    X, y = planted_sparse_problem(n_samples=600, n_features=60, n_classes=12, seed=2)
    X_tr, y_tr, X_te, y_te = X[:450], y[:450], X[450:], y[450:]
    clf = DSMLRClassifier(1e-3, max_epochs=2, tol=0, n_workers=2, random_state=0)
    clf.fit(X_tr, y_tr, X_val=X_te, y_val=y_te)
    last = clf.history_[-1]
    labels, _ = clf.predict_top_k(X_te, 5)
    expected = float(np.mean(np.any(labels == y_te[:, None], axis=1)))
    assert last["test_top5_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert last["test_accuracy"] == pytest.approx(clf.score(X_te, y_te), abs=1e-12)
    # Float32 scores summed in another order than the scoring module's.
    assert last["test_objective"] == pytest.approx(clf.objective(X_te, y_te), rel=1e-6)
