"""End-to-end tests of the ``dsmlr`` command line, run as ``python -m dsmlr`` subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dsmlr
from dsmlr.cli import COMMANDS, main
from dsmlr.io import read_svmlight

SRC = str(Path(dsmlr.__file__).resolve().parents[1])
EPOCHS = 3


def run_cli(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "dsmlr", *map(str, args)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False,
    )  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dsmlr: error: ")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Generate a small problem and train on it once; every test reads the results."""
    work = tmp_path_factory.mktemp("cli")
    gen = run_cli(
        "generate", work / "demo", "--samples", 600, "--features", 300, "--classes", 8,
        "--nnz-per-row", 20, "--seed", 3,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    train = run_cli(
        "train", work / "demo.train.svm", "--test", work / "demo.test.svm",
        "--epochs", EPOCHS, "--tol", -1, "--workers", 2, "--seed", 0,
        "--metrics", work / "metrics.jsonl", "--model", work / "model",
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    return work, gen, train


def test_generate_writes_both_splits(trained):
    work, gen, _ = trained
    train = read_svmlight(work / "demo.train.svm")
    test = read_svmlight(work / "demo.test.svm")
    assert (train.X.shape[0], test.X.shape[0]) == (480, 120)
    assert "demo.train.svm: 480 rows" in gen.stdout
    assert "demo.test.svm: 120 rows" in gen.stdout


def test_train_prints_epochs_writes_metrics_and_model(trained):
    work, _, train = trained
    epoch_lines = [line for line in train.stdout.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == EPOCHS
    assert all("test acc" in line for line in epoch_lines)
    assert "test top-5 accuracy" in train.stdout
    assert f"model saved to {work / 'model'}" in train.stdout
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    assert {"objective", "train_accuracy", "test_accuracy", "bytes_sent"} <= set(records[0])
    assert records[-1]["objective"] < records[0]["objective"]
    model = dsmlr.load_model(work / "model")
    assert model.history_[-1]["objective"] == pytest.approx(records[-1]["objective"])


def test_evaluate_json_matches_in_process_model(trained):
    work = trained[0]
    proc = run_cli("evaluate", "--model", work / "model", work / "demo.test.svm", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    model = dsmlr.load_model(work / "model")
    data = read_svmlight(
        work / "demo.test.svm", n_features=model.n_features_in_, allow_extra_features=True
    )
    assert report["n_samples"] == data.X.shape[0]
    assert report["accuracy"] == pytest.approx(np.mean(model.predict(data.X) == data.y))
    assert report["objective"] == pytest.approx(model.objective(data.X, data.y))
    assert report["accuracy"] <= report["top_5_accuracy"] <= 1.0
    text = run_cli("evaluate", "--model", work / "model", work / "demo.test.svm")
    assert text.returncode == 0 and "accuracy" in text.stdout


def test_predict_top_k_tsv(trained):
    work = trained[0]
    out = work / "pred.tsv"
    proc = run_cli(
        "predict", "--model", work / "model", work / "demo.test.svm", "--top-k", 3, "--out", out
    )
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert lines[0].split("\t") == [
        "row", "label_1", "prob_1", "label_2", "prob_2", "label_3", "prob_3",
    ]  # fmt: skip
    table = [line.split("\t") for line in lines[1:]]
    model = dsmlr.load_model(work / "model")
    X = read_svmlight(work / "demo.test.svm", n_features=model.n_features_in_).X
    assert len(table) == X.shape[0] and all(len(row) == 7 for row in table)
    assert [int(row[0]) for row in table] == list(range(X.shape[0]))
    assert [int(row[1]) for row in table] == model.predict(X).tolist()
    probs = np.array([[float(row[j]) for j in (2, 4, 6)] for row in table])
    assert np.all(np.diff(probs, axis=1) <= 1e-6) and np.all(probs.sum(axis=1) <= 1 + 1e-5)
    assert not list(work.glob(".pred.tsv.*"))  # the temporary file is gone


def test_predict_top_1_header_and_extra_features_warning(trained, capsys):
    """In-process (no numba needed): k = 1 layout, and unseen features dropped with a warning."""
    work = trained[0]
    model = dsmlr.load_model(work / "model")
    extra = work / "extra.svm"
    extra.write_text(f"1 1:0.5 {model.n_features_in_ + 7}:1.0\n2 2:0.25\n")
    out = work / "pred1.tsv"
    assert main(["predict", "--model", str(work / "model"), str(extra), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "row\tlabel\tprob" and len(lines) == 3
    assert [line.split("\t")[0] for line in lines[1:]] == ["0", "1"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning" in err and "dropped" in err and str(extra) in err


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help_exits_zero(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: dsmlr" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and dsmlr.__version__ in capsys.readouterr().out


def test_missing_file_is_one_line_error(tmp_path):
    missing = tmp_path / "no-such-file.svm"
    assert_one_line_error(run_cli("train", missing, "--model", tmp_path / "m"), str(missing))
    missing_model = tmp_path / "no-such-model"
    proc = run_cli("evaluate", "--model", missing_model, missing)
    assert_one_line_error(proc, str(missing_model))


def test_malformed_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.svm"
    bad.write_text("1 3:abc\n2 1:0.5\n")
    assert_one_line_error(run_cli("train", bad, "--model", tmp_path / "m"), f"{bad}:1:")


def test_unknown_flag_is_usage_error(tmp_path):
    proc = run_cli("train", tmp_path / "x.svm", "--no-such-flag")
    assert proc.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in proc.stderr


def test_zero_based_training_is_remembered(tmp_path, capsys):
    """A 0-based file whose rows never use feature 0 is read 0-based again at prediction."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(60):
        label = i % 3
        feats = sorted({0, 1 + label} | {int(j) for j in rng.integers(1, 6, size=2)})
        lines.append(f"{label} " + " ".join(f"{j}:1" for j in feats))
    (tmp_path / "train.svm").write_text("\n".join(lines) + "\n")
    # No feature 0 here: auto-detection alone would take it as 1-based and shift it.
    (tmp_path / "test.svm").write_text("1 2:1\n2 3:1\n")
    model_dir = tmp_path / "model"
    argv = ["train", str(tmp_path / "train.svm"), "--epochs", "30", "--quiet"]
    assert main([*argv, "--model", str(model_dir), "--workers", "1"]) == 0
    assert dsmlr.load_model(model_dir).metadata_ == {"zero_based": True}
    out = tmp_path / "pred.tsv"
    assert main(["predict", "--model", str(model_dir), str(tmp_path / "test.svm"),
                 "--out", str(out)]) == 0  # fmt: skip
    predicted = [line.split("\t")[1] for line in out.read_text().splitlines()[1:]]
    assert predicted == ["1", "2"]
    capsys.readouterr()


def test_under_an_mpi_launcher_without_mpi4py_the_error_says_what_to_install(
    monkeypatch, capsys, tmp_path
):
    import dsmlr.comm.mpi as mpi

    def missing():
        raise ImportError("running under an MPI launcher needs mpi4py; pip install 'dsmlr[mpi]'")

    monkeypatch.setenv("PMI_SIZE", "1")
    monkeypatch.setattr(mpi, "_mpi", missing)
    assert main(["train", str(tmp_path / "x.svm")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "dsmlr: error: running under an MPI launcher needs mpi4py; pip install 'dsmlr[mpi]'"
    ]


def test_closing_line_counts_the_epochs_run_with_eval_every(tmp_path, capsys):
    problem = dsmlr.make_extreme_multiclass(200, 30, 4, nnz_per_row=5, random_state=0)
    from dsmlr.io import write_svmlight

    write_svmlight(tmp_path / "t.svm", problem.X, problem.y)
    metrics = tmp_path / "metrics.jsonl"
    argv = ["train", str(tmp_path / "t.svm"), "--epochs", "6", "--eval-every", "4",
            "--tol", "-1", "--workers", "1", "--seed", "0", "--quiet",
            "--metrics", str(metrics), "--model", str(tmp_path / "model")]  # fmt: skip
    assert main(argv) == 0
    assert "reached the epoch limit after 6 epoch(s)" in capsys.readouterr().out
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 4, 6]
