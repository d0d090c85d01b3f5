"""``dsmlr plot``: reading metrics files, the figure it draws, and its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dsmlr
import dsmlr.plotting as plotting
from dsmlr.cli import main
from dsmlr.errors import DataError
from dsmlr.plotting import build_figure, read_metrics

pytest.importorskip("matplotlib")

SRC = str(Path(dsmlr.__file__).resolve().parents[1])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EPOCHS = 3


def _records(n_epochs: int, start: float, rate: float, *, test: bool = True) -> list[dict]:
    """Records shaped like ``EpochRecord.as_dict()``, plus a key from a later version."""
    out = []
    for epoch in range(1, n_epochs + 1):
        record = {
            "epoch": epoch,
            "time": 0.4 + 0.25 * epoch,
            "objective": 0.5 + start * rate**epoch,
            "train_accuracy": 0.6 + 0.03 * epoch,
            "compute_seconds": 0.2,
            "comm_seconds": 0.01,
            "eval_seconds": 0.02,
            "bytes_sent": 4096 * epoch,
            "peak_rss": [226062336, 228159488],
            "test_top5_accuracy": 0.9,  # unknown today: must be tolerated
        }
        if test:
            record |= {"test_objective": 0.9 - 0.01 * epoch, "test_accuracy": 0.5 + 0.02 * epoch}
        out.append(record)
    return out


def _write_jsonl(path: Path, records: list[dict], *, blank_lines: bool = False) -> Path:
    sep = "\n\n" if blank_lines else "\n"  # blank lines must be skipped
    path.write_text(sep.join(json.dumps(r) for r in records) + "\n")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two hand-written runs and one written by a real ``dsmlr train --metrics``."""
    work = tmp_path_factory.mktemp("plot")
    fast = _write_jsonl(work / "fast.jsonl", _records(8, 1.0, 0.5), blank_lines=True)
    slow = _write_jsonl(work / "slow.jsonl", _records(5, 1.2, 0.8))
    gen = ["generate", str(work / "tiny"), "--samples", "200", "--features", "60",
           "--classes", "4", "--nnz-per-row", "8", "--seed", "1"]  # fmt: skip
    assert main(gen) == 0
    real = work / "real.jsonl"
    train = ["train", str(work / "tiny.train.svm"), "--test", str(work / "tiny.test.svm"),
             "--epochs", str(EPOCHS), "--tol", "-1", "--workers", "1", "--seed", "0",
             "--quiet", "--metrics", str(real), "--model", str(work / "model")]  # fmt: skip
    assert main(train) == 0
    return {"fast": fast, "slow": slow, "real": real}


def _suptitle(fig) -> str:
    # Figure.get_suptitle is matplotlib >= 3.8; the dev extra allows 3.7.
    return fig.get_suptitle() if hasattr(fig, "get_suptitle") else fig._suptitle.get_text()


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dsmlr: error: "), err
    assert "Traceback" not in err
    return lines[0]


# -- reading ------------------------------------------------------------------------------


def test_read_metrics_accepts_the_real_format_and_unknown_keys(runs):
    real = read_metrics(runs["real"])
    assert [r["epoch"] for r in real] == list(range(1, EPOCHS + 1))
    assert all("test_accuracy" in r and "peak_rss" in r for r in real)
    fast = read_metrics(runs["fast"])  # written with blank lines in between
    assert len(fast) == 8 and fast[0]["test_top5_accuracy"] == 0.9


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        ('{"epoch": 1, "time": 0.1, "objective": 1.0}\n{"epoch": 2, "time": \n', 2, "not JSON"),
        ('\n{"epoch": 1, "time": 0.1}\n', 2, "record has no 'objective'"),
        ('{"epoch": 1, "objective": 1.0}\n', 1, "record has no 'time'"),
        ('{"epoch": 1, "time": "0.1", "objective": 1.0}\n', 1, "'time' is not a number"),
        ("[1, 2, 3]\n", 1, "expected a JSON object"),
    ],
)
def test_read_metrics_names_file_and_line(tmp_path, content, line, fragment):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=fragment) as info:
        read_metrics(path)
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_read_metrics_empty_and_missing(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(DataError, match="no records"):
        read_metrics(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="cannot read"):
        read_metrics(tmp_path / "missing.jsonl")


# -- the figure ---------------------------------------------------------------------------


def test_figure_has_four_labelled_panels_one_line_per_run(runs):
    records = [read_metrics(runs[name]) for name in ("fast", "slow", "real")]
    fig = build_figure(records, ["fast", "slow", "real"], title="three runs")
    assert len(fig.axes) == 4
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel()
        assert len(ax.get_lines()) == 3
        assert ax.get_yscale() == "linear"
    assert "(s)" in fig.axes[0].get_xlabel() and "epoch" in fig.axes[1].get_xlabel()
    assert "test accuracy" in fig.axes[2].get_ylabel()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["fast", "slow", "real"]
    assert _suptitle(fig) == "three runs"
    # Each run's curve is its own records, in a colour of its own.
    assert list(fig.axes[1].get_lines()[1].get_xdata()) == [1, 2, 3, 4, 5]
    assert len({line.get_color() for line in fig.axes[0].get_lines()}) == 3


def test_optimum_gives_log_relative_suboptimality_and_clips_at_a_floor(runs):
    records = [read_metrics(runs["fast"]), read_metrics(runs["slow"])]
    optimum = min(r["objective"] for r in records[0])  # the fast run reaches it: gap 0
    fig = build_figure(records, ["a", "b"], optimum=optimum)
    for ax in fig.axes[:2]:
        assert ax.get_yscale() == "log"
        assert "relative suboptimality" in ax.get_ylabel()
        assert "≤ 0" in ax.get_ylabel()  # the clipped point is declared
        for line in ax.get_lines():
            assert min(line.get_ydata()) > 0
    slow_gap = fig.axes[1].get_lines()[1].get_ydata()
    expected = [(r["objective"] - optimum) / abs(optimum) for r in records[1]]
    assert list(slow_gap) == pytest.approx(expected)
    # An optimum below every objective clips nothing and says nothing about clipping.
    fig = build_figure(records, ["a", "b"], optimum=optimum - 0.01)
    assert "≤ 0" not in fig.axes[0].get_ylabel()


def test_without_any_test_accuracy_train_accuracy_is_drawn_and_labelled(tmp_path):
    path = _write_jsonl(tmp_path / "notest.jsonl", _records(4, 1.0, 0.5, test=False))
    fig = build_figure([read_metrics(path)], ["only"])
    for ax in fig.axes[2:]:
        assert "train accuracy" in ax.get_ylabel() and "no test set" in ax.get_ylabel()
        assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([0.63, 0.66, 0.69, 0.72])


# -- the command --------------------------------------------------------------------------


def test_plot_command_writes_a_png(runs, tmp_path, capsys, monkeypatch):
    import matplotlib.image

    drawn = []
    save = plotting.save_figure
    monkeypatch.setattr(
        plotting, "save_figure", lambda fig, path: (drawn.append(fig), save(fig, path))
    )
    out = tmp_path / "runs.png"
    argv = ["plot", str(runs["fast"]), str(runs["slow"]), str(runs["real"]), "--out", str(out),
            "--optimum", "0.5", "--labels", "A,B,_C", "--title", "T"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out == f"wrote {out}: 3 run(s)\n"
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = matplotlib.image.imread(out).shape
    assert width > 400 and height > 300
    assert [p.name for p in tmp_path.iterdir()] == ["runs.png"]  # no temporary file left
    (fig,) = drawn
    # "_C" would be hidden by matplotlib's underscore rule if labels were not explicit.
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["A", "B", "_C"]
    assert fig.axes[0].get_yscale() == "log" and _suptitle(fig) == "T"


def test_default_labels_are_file_stems(runs, tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plotting, "save_figure", lambda fig, path: drawn.append(fig))
    assert (
        main(["plot", str(runs["fast"]), str(runs["slow"]), "--out", str(tmp_path / "x.png")]) == 0
    )
    assert [t.get_text() for t in drawn[0].legends[0].get_texts()] == ["fast", "slow"]


def test_missing_file_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "no-such-run.jsonl"
    assert main(["plot", str(missing), "--out", str(tmp_path / "f.png")]) == 1
    line = _one_error_line(capsys)
    assert str(missing) in line and "cannot read" in line
    assert not (tmp_path / "f.png").exists()


def test_malformed_line_names_file_and_line(runs, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"epoch": 1, "time": 0.5, "objective": 1.0}\nnot json\n')
    assert main(["plot", str(runs["fast"]), str(bad), "--out", str(tmp_path / "f.png")]) == 1
    assert f"{bad}:2: not JSON" in _one_error_line(capsys)


def test_wrong_number_of_labels_is_usage_error(runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", str(runs["fast"]), str(runs["slow"]), "--labels", "a,b,c",
              "--out", str(tmp_path / "f.png")])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: dsmlr plot" in err and "--labels has 3 label(s) for 2 file(s)" in err


def test_unknown_figure_format_is_one_line_error(runs, tmp_path, capsys):
    assert main(["plot", str(runs["fast"]), "--out", str(tmp_path / "f.xyz")]) == 1
    assert "unknown figure format '.xyz'" in _one_error_line(capsys)


def test_without_matplotlib_says_what_to_install(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
    assert main(["plot", str(runs["fast"]), "--out", str(tmp_path / "f.png")]) == 1
    assert _one_error_line(capsys) == (
        "dsmlr: error: dsmlr plot needs matplotlib: pip install 'dsmlr[plot]'"
    )


def test_cli_import_needs_neither_matplotlib_nor_torch():
    """``dsmlr --help`` stays fast: the heavy optional imports happen in the commands."""
    code = "import sys, dsmlr.cli; print(sorted({'matplotlib', 'torch'} & set(sys.modules)))"
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=True)  # fmt: skip
    assert proc.stdout.strip() == "[]"
