"""The cost model (:mod:`dsmlr.plan`) and ``dsmlr plan`` (:mod:`dsmlr.cli.plan`)."""

from __future__ import annotations

import argparse
import itertools
import json
import math

import numpy as np
import pytest

from dsmlr.calibration import calibrate
from dsmlr.cli import build_parser
from dsmlr.cli.plan import parse_bandwidth, parse_ranks
from dsmlr.engines import n_class_blocks
from dsmlr.engines.base import EngineConfig
from dsmlr.kernels.anchor_table import uses_tables
from dsmlr.memory import plan_memory
from dsmlr.plan import Throughput, TrainingPlan, default_throughput, plan_training

# A model far larger than its rows, as at scale (memory then shrinks with P).
BIG = {"n_samples": 1_000_000, "n_features": 200_000, "n_classes": 5000, "nnz": 50_000_000}
RATES = Throughput(update_sgd=1e8, update_svrg=5e7, update_adagrad=6e7, gradient=1e8,
                   score=2e8, source="test")  # fmt: skip


def plan(**kw) -> TrainingPlan:
    args = {**BIG, "n_ranks": 4, "bandwidth": 1e9, "throughput": RATES, **kw}
    return plan_training(**args)


def model_bytes(itemsize: int = 4) -> int:  # the default dtype, float32
    return BIG["n_classes"] * (BIG["n_features"] + 1) * itemsize


def lag_bytes(n_blocks: int) -> int:
    """The blocks' lag, which the update ring carries (one int64 a block's column)."""
    return 8 * n_blocks * (BIG["n_features"] + 1)


# -- memory ------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "svrg", "adagrad"])
@pytest.mark.parametrize("engine", ["sync", "async"])
@pytest.mark.parametrize("n_ranks", [1, 2, 3, 8])
def test_memory_is_plan_memory(optimizer, engine, n_ranks):
    got = plan(optimizer=optimizer, engine=engine, n_ranks=n_ranks, dtype="float32").memory
    cfg = EngineConfig(n_samples=BIG["n_samples"], n_features=BIG["n_features"],
                       n_classes=BIG["n_classes"])  # fmt: skip
    want = plan_memory(
        n_rows=-(-BIG["n_samples"] // n_ranks), nnz=-(-BIG["nnz"] // n_ranks),
        n_features=BIG["n_features"], n_classes=BIG["n_classes"], n_ranks=n_ranks,
        n_blocks=n_class_blocks(engine, cfg, n_ranks), itemsize=4, optimizer=optimizer,
        engine=engine, n_samples=BIG["n_samples"],
    )  # fmt: skip
    assert got == want


def test_more_ranks_need_less_memory_compute_and_time():
    plans = [plan(n_ranks=p) for p in (1, 2, 4, 8, 16, 32)]
    for fewer, more in itertools.pairwise(plans):
        assert more.memory.total < fewer.memory.total
        assert more.compute_seconds < fewer.compute_seconds
    # A ring of P shifts moves the whole model from every rank, whatever P; the update
    # and scoring rings of an epoch that scores make P - 1 shifts (see the next test),
    # so per rank a little more moves as P grows, up to the model once per ring (and
    # the update ring's lag, which grows with the blocks: up to one a class).
    sent = [p.bytes_sent for p in plans[1:]]
    most = plan(n_ranks=BIG["n_classes"])
    assert sent == sorted(sent) and sent[-1] < most.bytes_sent
    assert most.bytes_sent < 8 * model_bytes() + lag_bytes(BIG["n_classes"])


# -- bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("optimizer", "dtype", "update", "gradient"),
    [
        ("sgd", "float64", 1, 0),  # the update ring moves the weights
        ("sgd", "float32", 1, 0),
        ("svrg", "float64", 3, 2),  # weights, anchor, gradient; weights and gradient
        ("svrg", "float32", 3, 2),
        ("svrg-tables", "float32", 2, 2),  # the anchor in the ranks' tables
    ],
)
def test_bytes_per_epoch_follow_the_engines_formulas(optimizer, dtype, update, gradient):
    """In model sizes: P = 4, so a ring of P - 1 shifts moves 3/4 of its arrays; every
    ring makes 3 shifts, and SVRG's anchored epochs one more of the weights to bring them
    home; SVRG's first epoch is a plain one."""
    itemsize = 8 if dtype == "float64" else 4
    # Few enough rows that their tables' bound is below the model: uses_tables picks them.
    rows = {"n_samples": 1000} if optimizer == "svrg-tables" else {}
    assert uses_tables("auto", rows.get("n_samples", BIG["n_samples"]), BIG["n_classes"],
                       BIG["n_features"] + 1, itemsize, True) == bool(rows)  # fmt: skip
    got = plan(optimizer=optimizer.removesuffix("-tables"), dtype=dtype, **rows)
    M, lag = model_bytes(itemsize), lag_bytes(got.n_blocks)
    assert got.model_bytes == M
    home = 1 / 4 if gradient else 0
    update_ring = 3 / 4 * (update * M + lag)
    assert got.bytes_sent == pytest.approx(((gradient + 1) * 3 / 4 + home) * M + update_ring, abs=1)
    assert got.first_epoch_bytes == pytest.approx(3 / 4 * (2 * M + lag), abs=1)


def test_adagrad_bytes_carry_the_accumulators_and_scoring_every_n_epochs():
    got = plan(optimizer="adagrad", n_ranks=4)
    carried, lag = 8 * got.n_blocks * (BIG["n_features"] + 1), lag_bytes(got.n_blocks)
    expected = (2 * (model_bytes() + carried) + lag) * 3 / 4
    assert got.bytes_sent == pytest.approx(expected, abs=1)
    # Three epochs of one update ring (P = 4 shifts), one of an update and a scoring
    # ring of P - 1 shifts each.
    sparse_eval = plan(optimizer="sgd", eval_every=4)
    expected = ((3 + 2 * 3 / 4) * model_bytes() + (3 + 3 / 4) * lag) / 4
    assert sparse_eval.bytes_sent == pytest.approx(expected, abs=1)
    assert sparse_eval.score_seconds == pytest.approx(plan(optimizer="sgd").score_seconds / 4)


def test_one_rank_sends_nothing():
    got = plan(n_ranks=1)
    assert got.bytes_sent == got.first_epoch_bytes == got.messages == 0
    assert got.comm_seconds == 0.0


def test_seconds_follow_the_formulas():
    got = plan(optimizer="svrg", n_ranks=4, latency=1e-4)
    units = (-(-BIG["nnz"] // 4) + BIG["n_samples"] // 4) * BIG["n_classes"]
    assert got.units_per_pass == units
    assert got.kernel_seconds == pytest.approx(units / 5e7 + units / 1e8)
    assert got.compute_seconds == pytest.approx(got.kernel_seconds + units / 2e8)
    assert got.comm_seconds == pytest.approx(got.bytes_sent / 1e9 + got.messages * 1e-4)
    assert got.epoch_seconds == pytest.approx(got.compute_seconds + got.comm_seconds)
    assert got.total_seconds(3) == pytest.approx(got.first_epoch_seconds + 2 * got.epoch_seconds)
    # In-process workers hand blocks over by reference: latency only.
    local = plan(optimizer="svrg", n_ranks=4, bandwidth=math.inf, latency=0.0)
    assert local.comm_seconds == 0.0 and local.bytes_sent == got.bytes_sent


@pytest.mark.parametrize(
    "bad",
    [
        {"optimizer": "lbfgs"},
        {"engine": "ring"},
        {"dtype": "float16"},
        {"n_ranks": 0},
        {"bandwidth": 0.0},
        {"latency": -1.0},
        {"nnz": -1},
        {"eval_every": 0},
    ],
)
def test_bad_inputs_are_value_errors(bad):
    with pytest.raises(ValueError):
        plan(**bad)


def test_chunk_size_is_the_mpi_communicators():
    from dsmlr.comm import mpi
    from dsmlr.plan import CHUNK_BYTES

    assert mpi._CHUNK_BYTES == CHUNK_BYTES


def test_default_rates_are_positive():
    for dtype in ("float64", "float32"):
        rates = default_throughput(dtype)
        assert min(rates.update_sgd, rates.update_svrg, rates.update_adagrad, rates.gradient,
                   rates.score) > 0  # fmt: skip


@pytest.mark.parametrize("optimizer", ["sgd", "svrg"])
def test_bytes_match_a_real_in_process_run(optimizer):
    """The engines' own byte counters, epoch by epoch, against the model."""
    from dsmlr import DSMLRClassifier, make_extreme_multiclass

    n, d, k = 300, 40, 10
    problem = make_extreme_multiclass(n, d, k, nnz_per_row=8, random_state=0)
    clf = DSMLRClassifier(n_workers=2, optimizer=optimizer, max_epochs=3, tol=-1.0,
                          random_state=0).fit(problem.X, problem.y)  # fmt: skip
    n_classes = len(clf.classes_)
    want = plan_training(
        n_samples=n, n_features=d, n_classes=n_classes, nnz=problem.X.nnz, n_ranks=2,
        bandwidth=math.inf, optimizer=optimizer,
    )  # fmt: skip
    sent = [h["bytes_sent"] for h in clf.history_]
    assert len(sent) == 3
    assert sent[0] == want.first_epoch_bytes
    assert sent[1:] == [want.bytes_sent] * 2


def test_svrg_bytes_scoring_every_n_epochs_match_a_real_run():
    """With eval_every = 3 SVRG scores epochs 1, 3, 6 and 7 (its first, every third and
    the last) and anchors in the epochs after them: the record of epoch 6 covers a whole
    cycle (4: gradient and update rings, 5: an update ring, 6: update and scoring)."""
    from dsmlr import DSMLRClassifier, make_extreme_multiclass

    n, d, k = 300, 40, 10
    problem = make_extreme_multiclass(n, d, k, nnz_per_row=8, random_state=0)
    clf = DSMLRClassifier(n_workers=2, max_epochs=7, tol=-1.0, eval_every=3,
                          random_state=0).fit(problem.X, problem.y)  # fmt: skip
    want = plan_training(
        n_samples=n, n_features=d, n_classes=len(clf.classes_), nnz=problem.X.nnz, n_ranks=2,
        bandwidth=math.inf, eval_every=3,
    )  # fmt: skip
    assert [h["epoch"] for h in clf.history_] == [1, 3, 6, 7]
    assert clf.history_[0]["bytes_sent"] == want.first_epoch_bytes
    assert clf.history_[2]["bytes_sent"] == pytest.approx(3 * want.bytes_sent, abs=2)


def test_calibrate_measures_positive_rates():
    rates = calibrate(n_rows=200, n_features=300, block_classes=8, nnz_per_row=5, repeats=1,
                      ranks_per_host=2)  # fmt: skip
    values = [rates.update_sgd, rates.update_svrg, rates.update_adagrad, rates.gradient,
              rates.score, rates.update_svrg_tables, rates.gradient_tables]  # fmt: skip
    assert all(np.isfinite(values)) and min(values) > 0
    assert "ranks_per_host=2" in rates.source


def test_svrg_with_anchor_tables_takes_the_tables_kernels_rates():
    # 2200 classes x 1M features, 200K rows: the tables' bound (200K x 1000 entries) is
    # below the model, so SVRG holds its anchor as tables and runs those kernels.
    rates = Throughput(update_sgd=1e9, update_svrg=2e8, update_adagrad=3e8, gradient=4e8,
                       score=5e8, update_svrg_tables=6e8, gradient_tables=7e8)  # fmt: skip
    big = plan_training(n_samples=200_000, n_features=1_000_000, n_classes=2200,
                        nnz=10_000_000, n_ranks=2, bandwidth=1e9, throughput=rates)  # fmt: skip
    assert big.update_seconds == pytest.approx(big.units_per_pass / 6e8)
    assert big.gradient_seconds == pytest.approx(big.units_per_pass / 7e8)
    # A small model keeps anchor weights, and their rates.
    small = plan_training(n_samples=200_000, n_features=1000, n_classes=2200,
                          nnz=10_000_000, n_ranks=2, bandwidth=1e9, throughput=rates)  # fmt: skip
    assert small.update_seconds == pytest.approx(small.units_per_pass / 2e8)
    assert small.gradient_seconds == pytest.approx(small.units_per_pass / 4e8)
    # Rates without the tables' figures (an older calibration) fall back to these.
    old = Throughput(update_sgd=1e9, update_svrg=2e8, update_adagrad=3e8, gradient=4e8,
                     score=5e8)  # fmt: skip
    fallback = plan_training(n_samples=200_000, n_features=1_000_000, n_classes=2200,
                             nnz=10_000_000, n_ranks=2, bandwidth=1e9, throughput=old)  # fmt: skip
    assert fallback.update_seconds == pytest.approx(big.units_per_pass / 2e8)


# -- command line ------------------------------------------------------------------------


def run_plan_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        args = build_parser().parse_args(["plan", *argv])
        code = args.run(args)
    except SystemExit as exc:
        code = int(exc.code)
    out, err = capsys.readouterr()
    return code, out, err


PROBLEM = ("--samples", "100000", "--features", "20000", "--classes", "1000",
           "--nnz-per-row", "50")  # fmt: skip


def test_cli_prints_one_line_per_rank_count(capsys):
    code, out, err = run_plan_cli(capsys, *PROBLEM, "--ranks", "1,2,4,8", "--bandwidth",
                                  "10Gb/s", "--epochs", "10")  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:1] == ["P"])
    assert "10 epochs" in lines[head]
    assert [line.split()[0] for line in lines[head + 1 : head + 5]] == ["1", "2", "4", "8"]
    assert "no overlap" in out


def test_cli_json_matches_the_function(capsys):
    code, out, _ = run_plan_cli(capsys, *PROBLEM, "--ranks", "4", "--bandwidth", "2GB/s",
                                "--optimizer", "sgd", "--dtype", "float32", "--json")  # fmt: skip
    assert code == 0
    (got,) = json.loads(out)
    want = plan_training(n_samples=100000, n_features=20000, n_classes=1000, nnz=5_000_000,
                         n_ranks=4, bandwidth=2e9, optimizer="sgd", dtype="float32")  # fmt: skip
    assert got["bytes_sent"] == want.bytes_sent
    assert got["memory"]["total"] == want.memory.total
    assert got["epoch_seconds"] == pytest.approx(want.epoch_seconds)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1.25e9", 1.25e9),
        ("10Gb/s", 1.25e9),
        ("10GB/s", 1e10),
        ("100Gbps", 12.5e9),
        ("1GiB/s", 2**30),
        ("800 Mbit/s", 1e8),
        ("inf", math.inf),
    ],
)
def test_bandwidth_units(text, value):
    assert parse_bandwidth(text) == value


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("--bandwidth", "fast"), "argument --bandwidth: not a bandwidth: 'fast'"),
        (("--bandwidth", "10G"), "not a bandwidth: '10G'"),
        (("--bandwidth", "0GB/s"), "bandwidth must be > 0"),
        (("--ranks", "4,0"), "argument --ranks"),
        (("--nnz", "5"), "not allowed with argument"),
    ],
)
def test_cli_usage_errors_are_one_clean_message(capsys, argv, fragment):
    code, out, err = run_plan_cli(capsys, *PROBLEM, *argv)
    assert code == 2 and out == ""
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("dsmlr plan: error: ")
    assert fragment in err


def test_cli_needs_the_non_zeros(capsys):
    code, _, err = run_plan_cli(capsys, "--samples", "10", "--features", "5", "--classes", "3")
    assert code == 2 and "--nnz-per-row" in err


def test_parse_ranks():
    assert parse_ranks("16") == [16]
    assert parse_ranks("1,2,4") == [1, 2, 4]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_ranks("a,b")


def test_wired_into_dsmlr_main(capsys):
    """``dsmlr plan`` runs through :func:`dsmlr.cli.main`."""
    from dsmlr.cli import main

    assert main(["plan", *PROBLEM, "--ranks", "2"]) == 0
    assert "sent" in capsys.readouterr().out
