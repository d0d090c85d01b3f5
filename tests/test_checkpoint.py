"""Checkpoints and resume: exact continuation, atomic commits, refusals and damage."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dsmlr import DSMLRClassifier, load_model
from dsmlr.checkpoint import latest_checkpoint
from dsmlr.cli import main
from dsmlr.errors import DataError
from problems import planted_sparse_problem


@pytest.fixture(scope="module")
def data():
    return planted_sparse_problem(n_samples=500, n_features=70, n_classes=12, seed=5)


def _params(**kw) -> dict:
    return {"lam": 1e-3, "max_epochs": 6, "tol": 0.0, "n_workers": 2, "random_state": 4, **kw}


@pytest.mark.parametrize(
    ("optimizer", "engine", "eval_every"),
    [("svrg", "sync", 1), ("adagrad", "sync", 1), ("sgd", "sync", 2), ("svrg", "sync", 2)],
)
def test_a_resumed_run_ends_with_the_uninterrupted_model(data, tmp_path, optimizer, engine,
                                                         eval_every):  # fmt: skip
    X, y = data
    kw = _params(optimizer=optimizer, engine=engine, eval_every=eval_every)
    whole = DSMLRClassifier(**kw).fit(X, y)
    # Interrupted after epoch 4 (as if killed there), then resumed to epoch 6.
    DSMLRClassifier(**{**kw, "max_epochs": 4}, checkpoint_dir=tmp_path).fit(X, y)
    assert latest_checkpoint(tmp_path).name == "epoch-000004"
    resumed = DSMLRClassifier(**kw, checkpoint_dir=tmp_path, resume=True).fit(X, y)
    np.testing.assert_array_equal(resumed.coef_, whole.coef_)
    np.testing.assert_array_equal(resumed.intercept_, whole.intercept_)
    assert [h["epoch"] for h in resumed.history_] == [h["epoch"] for h in whole.history_]
    assert [h["objective"] for h in resumed.history_] == [h["objective"] for h in whole.history_]


def test_resume_takes_the_checkpointed_seed(data, tmp_path):
    X, y = data
    DSMLRClassifier(**_params(max_epochs=2), checkpoint_dir=tmp_path).fit(X, y)
    whole = DSMLRClassifier(**_params()).fit(X, y)
    resumed = DSMLRClassifier(**_params(random_state=None), checkpoint_dir=tmp_path,
                              resume=True).fit(X, y)  # fmt: skip
    np.testing.assert_array_equal(resumed.coef_, whole.coef_)


def test_resume_with_another_worker_count_continues(data, tmp_path):
    X, y = data
    first = DSMLRClassifier(**_params(max_epochs=3), checkpoint_dir=tmp_path).fit(X, y)
    more = DSMLRClassifier(**_params(n_workers=3), checkpoint_dir=tmp_path, resume=True).fit(X, y)
    objectives = [h["objective"] for h in more.history_]
    assert objectives[:3] == [h["objective"] for h in first.history_]
    assert objectives[-1] < objectives[2]  # it went on improving from the checkpoint


def test_checkpoints_are_models_and_only_the_newest_two_stay(data, tmp_path):
    X, y = data
    clf = DSMLRClassifier(**_params(max_epochs=5), checkpoint_dir=tmp_path, checkpoint_every=2)
    clf.fit(X, y)
    # Every second epoch, and the last.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-000004", "epoch-000005"]
    last = load_model(tmp_path / "epoch-000005")
    # The checkpoint holds the weights before the intercepts are centred at the end: the
    # same probabilities up to float32 rounding of the shifted intercepts.
    np.testing.assert_allclose(last.predict_proba(X), clf.predict_proba(X), rtol=1e-5)
    assert json.loads((tmp_path / "epoch-000005" / "checkpoint.json").read_text())["epoch"] == 5


def test_an_interrupted_save_never_loads(data, tmp_path):
    X, y = data
    DSMLRClassifier(**_params(max_epochs=2), checkpoint_dir=tmp_path).fit(X, y)
    # A crash mid-save leaves a .partial directory, even one that looks complete.
    shutil.copytree(tmp_path / "epoch-000002", tmp_path / ".epoch-000003.partial")
    assert latest_checkpoint(tmp_path).name == "epoch-000002"
    resumed = DSMLRClassifier(**_params(max_epochs=3), checkpoint_dir=tmp_path, resume=True)
    resumed.fit(X, y)
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3]
    assert not (tmp_path / ".epoch-000003.partial").exists()


def test_a_different_problem_is_refused(data, tmp_path):
    X, y = data
    DSMLRClassifier(**_params(max_epochs=2), checkpoint_dir=tmp_path).fit(X, y)
    with pytest.raises(DataError, match=r"epoch-000002: cannot resume: .*lam 0.001 -> 0.01"):
        DSMLRClassifier(**_params(lam=1e-2), checkpoint_dir=tmp_path, resume=True).fit(X, y)
    with pytest.raises(DataError, match="n_samples 500 -> 400"):
        DSMLRClassifier(**_params(), checkpoint_dir=tmp_path, resume=True).fit(X[:400], y[:400])


def test_a_damaged_block_is_named(data, tmp_path):
    X, y = data
    DSMLRClassifier(**_params(max_epochs=2), checkpoint_dir=tmp_path).fit(X, y)
    block = tmp_path / "epoch-000002" / "block_00001.npy"
    block.write_bytes(block.read_bytes()[:-8])
    with pytest.raises(DataError, match=r"block_00001.npy: .*checksum mismatch"):
        DSMLRClassifier(**_params(), checkpoint_dir=tmp_path, resume=True).fit(X, y)


def test_checkpoint_files_hold_no_pickles(data, tmp_path):
    X, y = data
    DSMLRClassifier(**_params(max_epochs=1, optimizer="adagrad"), checkpoint_dir=tmp_path).fit(X, y)
    files = list((tmp_path / "epoch-000001").glob("*.npy"))
    assert any(f.name.startswith("acc_") for f in files)
    for f in files:
        np.load(f, allow_pickle=False)


def test_cli_resume(tmp_path, capsys):
    from dsmlr.io import write_svmlight

    X, y = planted_sparse_problem(n_samples=300, n_features=40, n_classes=6, seed=6)
    data = tmp_path / "d.svm"
    write_svmlight(data, X, y)
    ck = tmp_path / "ck"
    common = ["train", str(data), "--workers", "2", "--seed", "1", "--quiet"]
    assert main([*common, "--epochs", "2", "--checkpoint-dir", str(ck), "--model",
                 str(tmp_path / "a")]) == 0  # fmt: skip
    assert main([*common, "--epochs", "4", "--checkpoint-dir", str(ck), "--resume",
                 "--model", str(tmp_path / "b")]) == 0  # fmt: skip
    assert main([*common, "--epochs", "4", "--model", str(tmp_path / "c")]) == 0
    assert (tmp_path / "b" / "block_00000.npy").read_bytes() == (
        tmp_path / "c" / "block_00000.npy"
    ).read_bytes()
    capsys.readouterr()
    assert main(["train", str(data), "--resume"]) == 1
    assert "--resume needs --checkpoint-dir" in capsys.readouterr().err


def test_a_run_that_cannot_fit_is_refused_before_allocating(data, monkeypatch, capsys, tmp_path):
    import dsmlr.memory

    X, y = data
    monkeypatch.setattr(dsmlr.memory, "available_bytes", lambda: 2**10)
    with pytest.raises(DataError, match=r"needs about .* but 0 MB is available .* ranks"):
        DSMLRClassifier(**_params()).fit(X, y)
    from dsmlr.io import write_svmlight

    write_svmlight(tmp_path / "d.svm", X, y)
    assert main(["train", str(tmp_path / "d.svm"), "--quiet", "--model", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DSMLR_MEMORY_CHECK=0 skips this check" in err[0]
    monkeypatch.setenv("DSMLR_MEMORY_CHECK", "0")
    DSMLRClassifier(**_params(max_epochs=1)).fit(X, y)


def test_the_memory_estimate_follows_the_documented_table():
    from dsmlr.memory import plan_memory

    plan = plan_memory(n_rows=1000, nnz=50_000, n_features=999, n_classes=400, n_ranks=4,
                       n_blocks=4, itemsize=4, optimizer="svrg")  # fmt: skip
    assert plan.rows == 50_000 * 8 + 16 * 1000
    assert plan.row_state == 8 * 1000 * (2 * 4 + 2)  # b, its anchor copy, two partials
    # Weights, anchor weights, gradient; the update passes' lag (one int64 a column) and,
    # while a pass runs, the decay each column owes from before it (two float64).
    assert plan.blocks == 100 * 1000 * 3 * 4 + 8 * 1000 + 16 * 1000
    sgd = plan_memory(n_rows=1000, nnz=50_000, n_features=999, n_classes=400, n_ranks=4,
                      n_blocks=4, itemsize=4, optimizer="sgd")  # fmt: skip
    assert sgd.blocks == 100 * 1000 * 4 + 8 * 1000 + 16 * 1000
    gpu = plan_memory(n_rows=1000, nnz=50_000, n_features=999, n_classes=400, n_ranks=4,
                      n_blocks=4, itemsize=4, optimizer="sgd", lag=False)  # fmt: skip
    assert gpu.blocks == 100 * 1000 * 4
    assert gpu.row_state == 8 * 1000 * (2 * 4 + 2)


def test_an_asynchronous_rank_is_planned_with_the_blocks_it_may_hold():
    from dsmlr.memory import async_blocks_held, plan_memory

    # Half the blocks and one arriving, at most two groups and one block.
    assert async_blocks_held(2, 4) == 3
    assert async_blocks_held(3, 12) == 7
    assert async_blocks_held(4, 16) == 9
    assert async_blocks_held(8, 32) == 9
    common = dict(n_rows=1000, nnz=50_000, n_features=999, n_classes=400, n_ranks=4,
                  n_blocks=16, itemsize=4)  # fmt: skip
    sync = plan_memory(**common, optimizer="adagrad", lag=False)
    assert sync.blocks == 100 * 1000 * 4 + 8 * 1000 * 4  # its group of 4 blocks
    tokens = plan_memory(**common, optimizer="adagrad", engine="async", lag=False)
    assert tokens.blocks == 9 * 25 * 1000 * 4 + 8 * 1000 * 9
    # One process: the in-process workers share their blocks, which move by reference.
    alone = {**common, "n_ranks": 1, "n_blocks": 4}
    assert plan_memory(**alone, optimizer="sgd", engine="async") == plan_memory(
        **alone, optimizer="sgd"
    )
