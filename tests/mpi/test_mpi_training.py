"""Training across MPI ranks: the serial optimum, bit-equality with the in-process
engine, model files written per block, and prediction on the distributed model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from mpi_helpers import agree
from sklearn.datasets import make_classification

import test_fixed_seed as fixed_seed
from dsmlr.distributed import fit_sharded, load_sharded
from dsmlr.kernels.base import training_layout
from dsmlr.plan import plan_training
from dsmlr.training import shard_rows, train_embedded
from problems import planted_sparse_problem, sklearn_objective

LAM = 1e-3


@pytest.fixture(scope="module")
def problem(comm):
    X, y = planted_sparse_problem(n_samples=1200, n_features=300, n_classes=12, seed=3)
    # One rank computes the reference optimum; everyone gets its objective.
    best = None
    if comm.rank == 0:
        best = sklearn_objective(X, y, LAM)
    return X, y, comm.allgather(best)[0]


def my_rows(X, y, comm):
    shard = shard_rows(X, y, comm.size, fit_intercept=True)[comm.rank]
    return shard.X, shard.y


@pytest.mark.parametrize("engine", ["sync", "async"])
def test_reaches_the_serial_optimum(comm, problem, engine):
    X, y, best = problem
    X_mine, y_mine = my_rows(X, y, comm)
    model = fit_sharded(
        X_mine, y_mine, comm=comm, lam=LAM, engine=engine, max_epochs=60, tol=1e-9,
        dtype="float64", random_state=0,
    )  # fmt: skip
    gap = (model.history_[-1]["objective"] - best) / best
    agree(comm, 0 <= gap < 1e-4 or abs(gap) < 1e-9, f"{engine}: relative gap {gap:.2e}")
    if comm.size > 1:
        held = sum(hi - lo for (lo, hi), _ in model.blocks)
        agree(comm, held < 12, f"rank holds {held} of 12 classes")


def test_async_with_a_slow_rank_reaches_the_optimum(comm, problem):
    # Tokens wait with their senders while the slow rank holds its fill of them (see
    # dsmlr.engines.async_tokens.HELD_BEYOND_GROUP); four blocks a rank, so that some do.
    X, y, best = problem
    X_mine, y_mine = my_rows(X, y, comm)
    model = fit_sharded(
        X_mine, y_mine, comm=comm, lam=LAM, engine="async", max_epochs=60, tol=1e-9,
        dtype="float64", random_state=0, blocks_per_rank=4,
        straggler=(comm.size - 1, 3.0),
    )  # fmt: skip
    gap = (model.history_[-1]["objective"] - best) / best
    agree(comm, 0 <= gap < 1e-4 or abs(gap) < 1e-9, f"relative gap {gap:.2e}")


def _final_gap(comm, X, y, best, **kw) -> float:
    """Relative gap to ``best`` after float64 training on this rank's share of X, y
    for all of ``max_epochs`` (``tol=-1``)."""
    X_mine, y_mine = my_rows(X, y, comm)
    model = fit_sharded(X_mine, y_mine, comm=comm, lam=LAM, tol=-1, dtype="float64",
                        random_state=0, **kw)  # fmt: skip
    return (model.history_[-1]["objective"] - best) / best


@pytest.mark.parametrize("engine", ["sync", "async"])
def test_scoring_every_third_epoch_reaches_the_optimum(comm, problem, engine):
    """Epochs that do not score end without the objective's allreduce: the asynchronous
    engine ends them with a barrier, or a rank could take the next epoch's tokens for
    this one's; SVRG anchors after each scoring epoch (dsmlr.engines.epochs.run_epochs)."""
    X, y, best = problem
    gap = _final_gap(comm, X, y, best, engine=engine, max_epochs=45, eval_every=3)
    agree(comm, abs(gap) < 1e-7, f"{engine}: relative gap {gap:.2e}")


@pytest.mark.parametrize("engine", ["sync", "async"])
def test_dense_data_reaches_the_optimum(comm, engine):
    """Every dense column couples the blocks that ranks move at once, as the intercept
    does; the relaxation covers them too (dsmlr.engines.relaxation).  At P = 2, one
    block a rank, relaxing the intercept alone left the engines 7.9e-6 (sync) and 2.9e-6
    (async) above the optimum after 30 epochs, so this can fail."""
    X, y = make_classification(n_samples=1500, n_features=30, n_informative=20,
                               n_classes=6, random_state=3)  # fmt: skip
    best = comm.allgather(sklearn_objective(X, y, LAM) if comm.rank == 0 else None)[0]
    gap = _final_gap(comm, X, y, best, engine=engine, max_epochs=30, blocks_per_rank=1)
    agree(comm, abs(gap) < 1e-7, f"{engine}: relative gap {gap:.2e}")


@pytest.mark.parametrize(("optimizer", "per_rank"), [("sgd", None), ("svrg", None), ("svrg", 2)])
def test_bytes_per_epoch_are_what_the_cost_model_counts(comm, problem, optimizer, per_rank):
    # The rings alternate in direction (P - 1 shifts each, the last of an odd number P)
    # and, with two blocks a rank, each travels on a helper thread: every epoch's bytes
    # per rank are still exactly dsmlr.plan's.
    X, y, _ = problem
    X_mine, y_mine = my_rows(X, y, comm)
    model = fit_sharded(X_mine, y_mine, comm=comm, lam=LAM, max_epochs=3, tol=-1,
                        optimizer=optimizer, random_state=0, blocks_per_rank=per_rank)  # fmt: skip
    want = plan_training(
        n_samples=X.shape[0], n_features=X.shape[1], n_classes=12, nnz=X.nnz,
        n_ranks=comm.size, bandwidth=math.inf, optimizer=optimizer, blocks_per_rank=per_rank,
    )  # fmt: skip
    sent = [h["bytes_sent"] for h in model.history_]
    expected = [want.first_epoch_bytes] + [want.bytes_sent] * 2
    agree(comm, sent == expected, f"{optimizer}: sent {sent}, the model counts {expected}")


@pytest.mark.parametrize("per_rank", [None, 2])
def test_sync_equals_the_in_process_engine_bit_for_bit(comm, problem, per_rank):
    # Same shards, same seed, sums in the same order: processes and threads must agree,
    # also where two blocks per rank let each travel while the next is visited (the
    # in-process engine never overlaps its shifts).
    X, y, _ = problem
    X_mine, y_mine = my_rows(X, y, comm)
    model = fit_sharded(X_mine, y_mine, comm=comm, lam=LAM, max_epochs=4, random_state=5,
                        blocks_per_rank=per_rank)  # fmt: skip
    from dsmlr.estimator import DSMLRClassifier

    clf = DSMLRClassifier(LAM, max_epochs=4, random_state=5, blocks_per_rank=per_rank)
    cfg = clf._engine_config(X.shape[0], X.shape[1], 12, 5)
    W = train_embedded(training_layout(X, cfg.dtype), y, cfg, comm.size).W
    same = all(np.array_equal(W[lo:hi], B.T) for (lo, hi), B in model.blocks)
    agree(comm, same, "blocks differ from the in-process run")


@pytest.mark.parametrize("optimizer", ["svrg", "adagrad", "sgd"])
def test_a_fixed_seed_trains_the_recorded_model(comm, optimizer):
    # The record tests/test_fixed_seed.py checks in process, where it has this P.
    dtype = "float32" if comm.size == 3 and optimizer == "svrg" else "float64"
    name = fixed_seed.key("sync", comm.size, optimizer, dtype)
    want = json.loads(fixed_seed.RECORD.read_text()).get(name)
    if want is None:
        pytest.skip(f"no record for {name}")
    X, y = fixed_seed.problem()
    X_mine, y_mine = my_rows(X, y, comm)
    model = fit_sharded(X_mine, y_mine, comm=comm, lam=1e-3,
                        **fixed_seed.settings("sync", optimizer, dtype))  # fmt: skip
    R = fixed_seed.direction(len(model.classes_), X.shape[1] + 1)
    projection, squares = comm.allreduce_sum(np.array([
        sum(float((B.T * R[lo:hi]).sum()) for (lo, hi), B in model.blocks),
        sum(float((B.astype(np.float64) ** 2).sum()) for _, B in model.blocks),
    ]))  # fmt: skip
    got = {"objectives": [h["objective"] for h in model.history_], "projection": projection,
           "norm": float(np.sqrt(squares))}  # fmt: skip
    try:
        fixed_seed.assert_matches(got, want, name)
        ok, message = True, ""
    except AssertionError as exc:
        ok, message = False, str(exc)
    agree(comm, ok, message)


def test_saved_blocks_load_in_one_process_and_predict_alike(comm, problem, shared_dir):
    X, y, _ = problem
    X_mine, y_mine = my_rows(X, y, comm)
    model = fit_sharded(X_mine, y_mine, comm=comm, lam=LAM, max_epochs=8, random_state=1)
    path = shared_dir / "model"
    model.save(path, metadata={"note": "mpi"})
    from dsmlr.estimator import load_model

    whole = load_model(path)
    objective = whole.objective(X, y)
    last = model.history_[-1]["objective"]
    # float32 scores summed in other orders by the training ring and the scoring module.
    agree(comm, abs(objective - last) <= 1e-6 * last, f"{objective} vs {last}")
    agree(comm, whole.metadata_ == {"note": "mpi"})
    # The ring prediction of the distributed model equals the single-process one.
    labels, proba = model.predict_top_k(X_mine, 3)
    ref_labels, ref_proba = whole.predict_top_k(X_mine, 3)
    agree(comm, np.array_equal(labels, ref_labels), "top-3 labels differ")
    agree(comm, np.allclose(proba, ref_proba, rtol=1e-6, atol=1e-9), "probabilities differ")
    # Loading with each rank reading only its blocks gives the same predictions.
    again = load_sharded(path, comm)
    agree(comm, np.array_equal(again.predict(X_mine), labels[:, 0]))
    report = again.evaluate(X_mine, y_mine, 5)
    agree(comm, abs(report["objective"] - objective) <= 1e-6 * objective, str(report))
    agree(comm, abs(report["accuracy"] - whole.score(X, y)) < 1e-12, str(report))


def test_weighted_training_equals_the_in_process_estimator(comm, problem):
    # Row weights and "balanced" class weights (counted over all ranks) give exactly
    # the model the estimator trains with as many in-process workers.
    X, y, _ = problem
    sw = np.random.default_rng(11).uniform(0.0, 2.0, len(y))
    shards = shard_rows(X, y, comm.size, True, sw)
    mine = shards[comm.rank]
    params = {"lam": LAM, "max_epochs": 3, "random_state": 2, "class_weight": "balanced"}
    model = fit_sharded(mine.X, mine.y, comm=comm, sample_weight=sw[_row_range(shards, comm)],
                        **params)  # fmt: skip
    from dsmlr.estimator import DSMLRClassifier

    clf = DSMLRClassifier(n_workers=comm.size, **params).fit(X, y, sample_weight=sw)
    W = np.hstack([clf.coef_, clf.intercept_[:, None]])
    same = all(np.array_equal(W[lo:hi], B.T) for (lo, hi), B in model.blocks)
    agree(comm, same, "weighted blocks differ from the in-process run")


def _row_range(shards, comm) -> slice:
    start = sum(s.n_rows for s in shards[: comm.rank])
    return slice(start, start + shards[comm.rank].n_rows)


@pytest.mark.parametrize("optimizer", ["svrg", "adagrad"])
def test_torch_blocks_cross_ranks_through_host_buffers(comm, problem, optimizer):
    # The torch kernel keeps blocks as tensors; MPI sends host copies and the arriving
    # arrays become tensors again: the same model as the in-process torch run.
    pytest.importorskip("torch")
    X, y, _ = problem
    X_mine, y_mine = my_rows(X, y, comm)
    params = {"lam": LAM, "max_epochs": 3, "random_state": 4, "kernel": "torch",
              "optimizer": optimizer, "batch_size": 4}  # fmt: skip
    model = fit_sharded(X_mine, y_mine, comm=comm, **params)
    from dsmlr.estimator import DSMLRClassifier

    clf = DSMLRClassifier(n_workers=comm.size, **params).fit(X, y)
    W = np.hstack([clf.coef_, clf.intercept_[:, None]])
    same = all(np.allclose(W[lo:hi], B.T, rtol=1e-9, atol=1e-12) for (lo, hi), B in model.blocks)
    agree(comm, same, "torch blocks under MPI differ from the in-process run")


def test_torch_tokens_reach_the_serial_optimum(comm, problem):
    # Asynchronous tokens (their order depends on timing) carrying torch blocks.
    pytest.importorskip("torch")
    X, y, best = problem
    X_mine, y_mine = my_rows(X, y, comm)
    model = fit_sharded(
        X_mine, y_mine, comm=comm, lam=LAM, engine="async", kernel="torch", max_epochs=60,
        tol=1e-9, dtype="float64", random_state=0,
    )  # fmt: skip
    gap = (model.history_[-1]["objective"] - best) / best
    agree(comm, 0 <= gap < 1e-4 or abs(gap) < 1e-9, f"relative gap {gap:.2e}")


def test_predictions_table_is_written_in_rank_order_a_slice_at_a_time(comm, shared_dir):
    from dsmlr.cli.predict import write_predictions, write_predictions_mpi

    # Ranks hold different row counts (rank r: 2r + 3, one rank none when P > 1), with
    # string labels holding the separator; slices of 2 rows, so most ranks send several.
    counts = [2 * r + 3 for r in range(comm.size)]
    if comm.size > 1:
        counts[1] = 0
    rng = np.random.default_rng(0)
    total = sum(counts)
    labels = np.array([f"c{i % 4},x" for i in range(2 * total)], dtype=object).reshape(total, 2)
    proba = rng.random((total, 2))
    lo = sum(counts[: comm.rank])
    mine = slice(lo, lo + counts[comm.rank])
    path = str(shared_dir / f"pred-{comm.size}.csv")
    n = write_predictions_mpi(comm, path, labels[mine], proba[mine], slice_rows=2)
    agree(comm, n == total, f"{n} rows written, {total} expected")
    if comm.rank == 0:
        whole = str(shared_dir / f"whole-{comm.size}.csv")
        write_predictions(whole, labels, proba)
        with open(path, encoding="utf-8") as a, open(whole, encoding="utf-8") as b:
            same = a.read() == b.read()
    agree(comm, comm.allgather(same if comm.rank == 0 else None)[0], "table differs")
