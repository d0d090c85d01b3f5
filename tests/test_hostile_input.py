"""Hostile input through the command line: every bad file is one line naming it, exit 1.

The table below is the contract for ``dsmlr train FILE`` (and, further down, for
``evaluate`` and ``predict``): each entry is a file a user may really hand over, with the
line and the words the error must contain.  Each case runs in-process through
:func:`dsmlr.cli.main`; a few run again as real ``python -m dsmlr`` processes (and under
``mpiexec -n 2`` when it is installed), to show that no traceback reaches a terminal.

Files that look odd but are valid (comments, blank lines, Windows line endings,
compression, a byte-order mark, test files with labels or features the training data
never had, huge-but-finite values) must instead work, with the behaviour the README's
"Input checks" paragraph documents; each such test says why.

Property tests (hypothesis) cover the parser and the per-rank reader: a written file
reads back exactly whatever valid decoration it is given, and one bad line anywhere is
reported at its exact line by the whole-file reader and by every rank alike.  A short
run of the mutation fuzzer (``tests/fuzz_svmlight.py``) closes the file.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import json
import lzma
import os
import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dsmlr
from dsmlr.cli import main
from dsmlr.comm import run_workers
from dsmlr.errors import DataError
from dsmlr.io import load_dataset, read_svmlight, read_svmlight_shard, save_dataset, write_svmlight
from dsmlr.io.svmlight import _NeedsLineNumber, _parse_python, _UnderscoreGuard
from fuzz_svmlight import fuzz

SRC = str(Path(dsmlr.__file__).resolve().parents[1])
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
# A small valid training set: 3 classes, 1-based indices, 3 features.
GOOD = b"1 1:1 2:0.5\n2 2:1 3:1\n3 1:0.2 3:2\n1 1:1\n2 2:0.8\n3 3:1.5\n"
TRAIN = ["--epochs", "3", "--workers", "1", "--seed", "0", "--quiet"]


def put(tmp_path: Path, content: bytes, name: str = "data.svm") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """``dsmlr argv`` in this process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(
    code: int, out: str, err: str, path: str, line: int | None, fragment: str
) -> str:
    """Exit 1, one ``dsmlr: error:`` line naming ``path`` (and ``line``), no traceback."""
    assert code == 1, (code, out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    message = lines[0]
    assert message.startswith("dsmlr: error: "), message
    assert path in message, message
    if line is not None:
        assert f"{path}:{line}: " in message, message
    assert fragment in message, message
    return message


# ---------------------------------------------------------------- the train table


@dataclass(frozen=True)
class Case:
    """A hostile file for ``dsmlr train``: the error line and words it must produce."""

    id: str
    content: bytes
    line: int | None  # None: no line is meaningful (the file as a whole is wrong)
    fragment: str
    args: tuple[str, ...] = ()
    name: str = "data.svm"


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


HOSTILE = [
    # Nothing to learn from: refused, not an empty model.
    Case("empty file", b"", None, "no data lines"),
    Case("only blank lines and comments", b"# header\n\n   \n# end\n", None, "no data lines"),
    Case("missing label", b"1 1:1\n2:1 3:1\n", 2, "missing label: line starts with feature '2:1'"),
    Case("non-numeric label", b"1 1:1\nspam 1:1\n", 2, "non-numeric label 'spam'"),
    Case("multi-label line", b"1 1:1\n1,2 1:1\n", 2, "multi-label line"),
    # A classifier's labels are classes; scikit-learn's "Unknown label type: continuous"
    # would say neither the file nor the line.
    Case("fractional label", b"1 1:1\n1.5 1:1\n", 2, "label '1.5' is not a class"),
    Case("label beyond 2**53", b"1 1:1\n1e300 1:1\n", 2, "label '1e300' is not a class"),
    Case("non-numeric value", b"1 1:1\n2 1:abc\n", 2, "non-numeric value in token '1:abc'"),
    Case("missing value", b"1 1:1\n2 3:\n", 2, "missing value in token '3:'"),
    Case("token without colon", b"1 1:1\n2 1:1 junk\n", 2, "malformed token 'junk'"),
    # Found by the fuzzer: scikit-learn's loader read "1e-_1" as 0.1, silently.
    Case("underscore in a number", b"1 1:1\n2 1:1e-_1\n", 2, "'_' is not part of a LIBSVM"),
    # Index 0 makes an "auto" file zero-based (see the success tests); declared
    # one-based, it is an error.
    Case(
        "index 0 in a 1-based file",
        b"1 1:1\n2 0:1\n",
        2,
        "feature index 0 in a one-based file",
        ("--zero-based", "no"),
    ),
    Case("negative index", b"1 1:1\n2 -3:1\n", 2, "negative feature index in token '-3:1'"),
    # Beyond LIBSVM's C int: refused at its line instead of asking training for terabytes.
    Case("huge index", b"1 1:1\n2 99999999999:1\n", 2, "feature index 99999999999 is implausibly"),
    Case("index just past int32", b"1 1:1\n2 2147483648:1\n", 2, "LIBSVM indices stop at"),
    # LIBSVM and scikit-learn refuse duplicates too; summing or keeping one would guess.
    Case("duplicate index", b"1 1:1\n2 3:1 2:1 3:2\n", 2, "duplicate feature index 3"),
    Case("NaN value", b"1 1:1\n2 1:nan\n", 2, "non-finite value in token '1:nan'"),
    Case("inf value", b"1 1:1\n2 2:-inf\n", 2, "non-finite value in token '2:-inf'"),
    Case("NaN label", b"1 1:1\nnan 1:1\n", 2, "non-finite label 'nan'"),
    Case("inf label", b"1 1:1\nInfinity 1:1\n", 2, "non-finite label 'Infinity'"),
    # Finite text that float64 cannot hold: an overflow, said as such.
    Case("value beyond float64", b"1 1:1\n2 1:1e400\n", 2, "'1:1e400' overflows float64"),
    Case("label beyond float64", b"1 1:1\n1e400 1:1\n", 2, "label '1e400' overflows float64"),
    # Finite, but its square is not: training's step size would become 0 (and scores
    # inf), so the row is refused at its line rather than trained into NaN.
    Case(
        "extremely large value",
        b"1 1:1\n2 2:1e300\n",
        2,
        "values too large: the row's squared norm overflows float64",
        ("--dtype", "float64"),
    ),
    # The default float32 holds less.
    Case("value beyond float32", b"1 1:1\n2 1:1e39\n", 2, "value 1e+39 overflows float32"),
    Case("extremely large for float32", b"1 1:1\n2 1:1e30\n", 2, "squared norm overflows float32"),
    Case("binary garbage", bytes(range(256)) * 8, 1, "line is not text"),
    Case("NUL bytes", b"1 1:1\n\x00\x00\x00\x00\n", 2, "line is not text"),
    Case("UTF-16 text", "1 1:1\n2 2:1\n".encode("utf-16"), 1, "file is UTF-16 text"),
    Case("bare CR line endings", b"1 1:1\r2 2:1\r3 3:1\r", 1, "bare carriage returns"),
    Case("truncated gzip", _gz(GOOD * 200)[:-30], None, "cannot read (corrupt or truncated?)"),
    Case("gzip of garbage", _gz(bytes(range(256)) * 4), 1, "line is not text"),
    Case("garbage named .npz", bytes(range(256)), None, "not an .npz archive", name="d.npz"),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c.id for c in HOSTILE])
def test_train_refuses_hostile_input_with_one_line(tmp_path, capsys, case):
    path = put(tmp_path, case.content, case.name)
    result = run(["train", path, "--model", tmp_path / "m", *TRAIN, *case.args], capsys)
    assert_one_line_error(*result, path, case.line, case.fragment)
    assert not (tmp_path / "m").exists(), "a model was saved from a bad file"


def test_random_binary_garbage(tmp_path, capsys):
    """Bytes from a seeded generator: whichever line breaks first, it is named."""
    path = put(tmp_path, random.Random(7).randbytes(4096), "noise.bin")
    message = assert_one_line_error(
        *run(["train", path, "--model", tmp_path / "m", *TRAIN], capsys), path, None, ""
    )
    assert re.search(re.escape(path) + r":\d+: ", message), message


def test_the_test_file_is_named_when_it_is_the_bad_one(tmp_path, capsys):
    train = put(tmp_path, GOOD, "train.svm")
    test = put(tmp_path, b"1 1:1\n2 2:nan\n", "test.svm")
    result = run(["train", train, "--test", test, "--model", tmp_path / "m", *TRAIN], capsys)
    assert_one_line_error(*result, test, 2, "non-finite value")


# ---------------------------------------------------------------- evaluate and predict


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A model trained on GOOD (one-based: its index base travels with it)."""
    work = tmp_path_factory.mktemp("hostile-model")
    (work / "train.svm").write_bytes(GOOD)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(work / "train.svm"), "--model", str(work / "m"), *TRAIN]) == 0
    return work / "m"


SCORING = [
    Case("index 0 in a 1-based model's file", b"1 1:1\n2 0:1\n", 2, "feature index 0"),
    Case("NaN value", b"1 1:nan\n", 1, "non-finite value"),
    Case("fractional label", b"1 1:1\n0.5 2:1\n", 2, "label '0.5' is not a class"),
    Case("binary garbage", bytes(range(256)) * 2, 1, "line is not text"),
    Case("extremely large value", b"1 1:1e30\n", 1, "values too large"),
    Case("empty file", b"", None, "no data lines"),
]


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("case", SCORING, ids=[c.id for c in SCORING])
def test_evaluate_and_predict_refuse_hostile_input(tmp_path, capsys, model_dir, command, case):
    path = put(tmp_path, case.content)
    out = ["--out", tmp_path / "p.tsv"] if command == "predict" else []
    result = run([command, "--model", model_dir, path, *out], capsys)
    assert_one_line_error(*result, path, case.line, case.fragment)
    assert not (tmp_path / "p.tsv").exists()


# ---------------------------------------------------------------- valid but unusual


def _coef(model: Path) -> np.ndarray:
    return dsmlr.load_model(model).coef_


def _train_ok(tmp_path: Path, capsys, content: bytes, name: str, *args: str) -> tuple[Path, str]:
    path = put(tmp_path, content, name)
    model = tmp_path / f"model-{name}"
    code, out, err = run(["train", path, "--model", model, *TRAIN, *args], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    return model, out


def test_blank_lines_and_comments_are_ignored(tmp_path, capsys):
    """Comment lines, trailing comments, blank and whitespace-only lines carry no rows:
    the model is exactly the one trained on the bare file."""
    decorated = b"# features: 3\n\n" + GOOD.replace(b"\n", b"  # note 9:9\n   \n", 2) + b"# end"
    plain, _ = _train_ok(tmp_path, capsys, GOOD, "plain.svm")
    model, _ = _train_ok(tmp_path, capsys, decorated, "decorated.svm")
    np.testing.assert_array_equal(_coef(model), _coef(plain))


@pytest.mark.parametrize(
    ("name", "transform"),
    [
        ("crlf.svm", lambda b: b.replace(b"\n", b"\r\n")),  # Windows line endings
        ("bom.svm", lambda b: b"\xef\xbb\xbf" + b),  # UTF-8 byte-order mark (Notepad)
        ("data.svm.gz", _gz),  # compression, recognised by content, not by name
        ("data.bz2", bz2.compress),
        ("data.xz", lzma.compress),
        ("gzipped-but-named.txt", _gz),
    ],
)
def test_valid_variants_train_the_same_model(tmp_path, capsys, name, transform):
    """Line endings, a byte-order mark and compression change nothing: the same rows,
    the same model, bit for bit."""
    plain, _ = _train_ok(tmp_path, capsys, GOOD, "plain.svm")
    model, _ = _train_ok(tmp_path, capsys, transform(GOOD), name)
    np.testing.assert_array_equal(_coef(model), _coef(plain))


def test_index_0_in_auto_mode_means_zero_based(tmp_path, capsys):
    """Without --zero-based, a file using index 0 is zero-based (LIBSVM files that use
    0 are); the model remembers it, so later files are read the same way."""
    model, _ = _train_ok(tmp_path, capsys, b"1 0:1 1:1\n2 1:1 2:1\n3 2:1\n", "zero.svm")
    assert dsmlr.load_model(model).metadata_ == {"zero_based": True}


def test_extremely_large_but_trainable_values_give_finite_weights(tmp_path, capsys):
    """1e30 is far from the data training expects, but its square is finite in float64:
    training must end with finite weights (the objective is guarded), not NaN."""
    big = b"1 1:1e30\n2 2:1e30\n3 3:2e30\n1 1:3e30\n"
    model, out = _train_ok(tmp_path, capsys, big, "big.svm", "--dtype", "float64")
    assert np.isfinite(_coef(model)).all()
    assert "nan" not in out.lower()


def test_large_float32_values_whose_squares_sum_beyond_float32_train(tmp_path, capsys):
    """Every row passes the per-row check (1e36 < float32's 3.4e38) and the sum over the
    rows that sets the step size is taken in float64, so training ends with finite
    weights rather than overflowing."""
    big = b"1 1:1e18\n2 2:1e18\n3 1:2e18\n" * 200
    model, out = _train_ok(tmp_path, capsys, big, "big32.svm", "--dtype", "float32")
    assert np.isfinite(_coef(model)).all()
    assert "nan" not in out.lower()


def test_unseen_test_features_are_dropped_with_a_warning(tmp_path, capsys, model_dir):
    """Features the model never saw carry no weight: dropped, said once on stderr (naming
    the file), and the predictions are those of the file without them."""
    extra = put(tmp_path, b"1 1:1 7:5\n2 2:1 3:1 40:2\n", "extra.svm")
    bare = put(tmp_path, b"1 1:1\n2 2:1 3:1\n", "bare.svm")
    code, _, err = run(
        ["predict", "--model", model_dir, extra, "--out", tmp_path / "e.tsv"], capsys
    )
    assert code == 0
    assert err.count("\n") == 1 and "warning" in err and "dropped" in err and extra in err
    assert run(["predict", "--model", model_dir, bare, "--out", tmp_path / "b.tsv"], capsys)[0] == 0
    assert (tmp_path / "e.tsv").read_text() == (tmp_path / "b.tsv").read_text()


def test_unseen_test_labels_count_as_errors(tmp_path, capsys, model_dir):
    """A label the model cannot predict is a wrong answer, not a crash: accuracy counts
    it as wrong, and the objective is over the rows with known labels."""
    path = put(tmp_path, b"99 1:1\n42 2:1\n1 1:1\n", "unseen.svm")
    code, out, err = run(["evaluate", "--model", model_dir, path, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["n_samples"] == 3 and report["accuracy"] <= 1 / 3
    assert report["objective"] is not None and np.isfinite(report["objective"])


def test_train_with_a_test_file_of_unseen_labels_and_features(tmp_path, capsys):
    train = put(tmp_path, GOOD, "train.svm")
    test = put(tmp_path, b"7 1:1 9:1\n1 1:1\n", "test.svm")
    code, out, err = run(
        ["train", train, "--test", test, "--model", tmp_path / "m", *TRAIN], capsys
    )
    assert code == 0, err
    assert "test accuracy" in out and "dropped" in err and test in err


# ---------------------------------------------------------------- the loader's norm check


def test_norm_check_is_the_loaders_and_can_be_turned_off(tmp_path):
    """read_svmlight reads any finite value (a round trip must hold); load_dataset, which
    the command line uses, refuses rows no model can train on, in either format."""
    path = put(tmp_path, b"1 1:1\n2 1:1e200 2:1e200\n")
    assert read_svmlight(path).X.data.max() == 1e200
    with pytest.raises(DataError, match=r":2: values too large"):
        load_dataset(path)
    assert load_dataset(path, check_norms=False).X.nnz == 3
    npz = str(tmp_path / "big.npz")
    save_dataset(npz, np.array([[1.0, 0.0], [1e200, 1e200]]), [1, 2])
    with pytest.raises(DataError, match=r"X row 1 \(from 0\): values too large"):
        load_dataset(npz)
    # Values dropped as features beyond the model's do not count.
    extra = put(tmp_path, b"1 1:1\n2 1:1 2:1e200\n", "extra.svm")
    with pytest.warns(UserWarning, match="dropped 1 value"):
        assert load_dataset(extra, n_features=1, allow_extra_features=True).X.nnz == 2
    save_dataset(npz, np.array([[1.0, 0.0], [1.0, 1e200]]), [1, 2])
    with pytest.warns(UserWarning, match="dropped 1 value"):
        assert load_dataset(npz, n_features=1, allow_extra_features=True).X.nnz == 2


# ---------------------------------------------------------------- real processes


def _cli(*args: object, mpi: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "dsmlr", *map(str, args)]
    if mpi is not None:
        cmd = [MPIEXEC, "-n", str(mpi), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)


SUBPROCESS = ["empty file", "binary garbage", "extremely large value"]


@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_no_traceback_reaches_the_terminal(tmp_path, case_id):
    case = next(c for c in HOSTILE if c.id == case_id)
    path = put(tmp_path, case.content)
    proc = _cli("train", path, "--model", tmp_path / "m", *TRAIN, *case.args)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, path, case.line, case.fragment)


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec")
@pytest.mark.parametrize("case_id", ["NaN value", "binary garbage"])
def test_under_mpiexec_every_rank_exits_1_and_rank_0_says_it_once(tmp_path, case_id):
    pytest.importorskip("mpi4py")
    case = next(c for c in HOSTILE if c.id == case_id)
    # Enough good rows that the bad line lies in rank 1's half of the bytes.
    path = put(tmp_path, GOOD * 20 + case.content)
    line = GOOD.count(b"\n") * 20 + case.line
    proc = _cli("train", path, "--model", tmp_path / "m", *TRAIN, *case.args, mpi=2)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, path, line, case.fragment)


# ---------------------------------------------------------------- properties


def _decorate(text: bytes, rng: random.Random) -> bytes:
    """The same rows with valid decoration: comments, blank lines, CRLF, a BOM."""
    out = []
    for line in text.splitlines():
        if rng.random() < 0.3:
            out.append(rng.choice([b"# a comment 1:2", b"", b"   ", b"\t"]))
        out.append(line + (b"  # trailing" if rng.random() < 0.2 else b""))
    eol = rng.choice([b"\n", b"\r\n"])
    data = eol.join(out) + (eol if rng.random() < 0.8 else b"")
    return (b"\xef\xbb\xbf" if rng.random() < 0.2 else b"") + data


COMPRESSORS = [lambda b: b, _gz, bz2.compress, lzma.compress]


@settings(max_examples=60, deadline=None)
@given(
    cells=st.dictionaries(
        st.tuples(st.integers(0, 7), st.integers(0, 9)),
        st.floats(allow_nan=False, allow_infinity=False, width=64).filter(bool),
        max_size=30,
    ),
    labels=st.lists(st.integers(-5, 5), min_size=8, max_size=8),
    seed=st.integers(0, 2**16),
    compress=st.sampled_from(range(len(COMPRESSORS))),
)
def test_round_trip_survives_any_valid_decoration(tmp_path_factory, cells, labels, seed, compress):
    """Write, decorate validly (comments, blank lines, CRLF, BOM, compression), read: the
    rows are exactly what was written, through both parsers."""
    X = np.zeros((8, 10))
    for (r, c), v in cells.items():
        X[r, c] = v
    work = tmp_path_factory.mktemp("deco")
    write_svmlight(work / "plain.svm", X, labels)
    data = COMPRESSORS[compress](_decorate((work / "plain.svm").read_bytes(), random.Random(seed)))
    path = put(work, data, "decorated")
    for reader in (read_svmlight, _parse_python):
        back = reader(path, zero_based=False, n_features=10)
        np.testing.assert_array_equal(back.X.toarray(), X)
        np.testing.assert_array_equal(back.y, labels)


BAD_LINES = [
    (b"1 4:abc", "non-numeric value"),
    (b"2:1 3:1", "missing label"),
    (b"1 1:nan", "non-finite value"),
    (b"1 3:1 3:2", "duplicate feature index 3"),
    (b"1 0:1", "feature index 0 in a one-based file"),
    (b"1 2:1e39", "overflows float32"),
    (b"1 1:1e30", "squared norm overflows float32"),
    (b"\x00\xff", "line is not text"),
    (b"2.5 1:1", "label '2.5' is not a class"),
]


@settings(max_examples=60, deadline=None)
@given(
    n_good=st.integers(1, 60),
    where=st.floats(0, 1),
    bad=st.sampled_from(BAD_LINES),
    n_ranks=st.integers(1, 4),
    crlf=st.booleans(),
)
def test_one_bad_line_is_named_exactly_by_every_reader(
    tmp_path_factory, n_good, where, bad, n_ranks, crlf
):
    """Wherever one bad line sits, the whole-file reader and every rank of the per-rank
    reader name it, with the same message (the partition never shifts a line)."""
    good = [b"%d %d:1.5 %d:2" % (i % 3, i % 5 + 1, i % 5 + 7) for i in range(n_good)]
    at = int(where * n_good)
    lines = [*good[:at], bad[0], *good[at:]]
    eol = b"\r\n" if crlf else b"\n"
    path = put(tmp_path_factory.mktemp("bad"), eol.join(lines) + eol)
    options = {"zero_based": False, "dtype": np.float32, "check_norms": True,
               "class_labels": True}  # fmt: skip
    with pytest.raises(DataError) as info:
        read_svmlight(path, **options)
    assert info.value.line == at + 1 and bad[1] in str(info.value)

    def body(comm):
        try:
            return read_svmlight_shard(path, comm, **options)
        except DataError as exc:
            return exc

    assert {str(r) for r in run_workers(n_ranks, body)} == {str(info.value)}


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(
        st.tuples(st.sampled_from([b"1 1:2", b"1 1:2_0", b"_", b""]),
                  st.sampled_from([b"", b" # c", b" # c_d", b"#_"])),
        min_size=1, max_size=12,
    ),
    chunk=st.integers(1, 40),
)  # fmt: skip
def test_underscore_guard_sees_data_underscores_across_any_chunking(lines, chunk):
    """The fast path's guard stops exactly when an underscore lies outside a comment,
    wherever the chunks it reads happen to split the lines."""
    data = b"\n".join(a + b for a, b in lines) + b"\n"
    expected = any(b"_" in a for a, _ in lines)
    reader = io.BufferedReader(_UnderscoreGuard(io.BytesIO(data)), chunk)
    try:
        assert b"".join(reader) == data
        stopped = False
    except _NeedsLineNumber:
        stopped = True
    assert stopped == expected


def _both_readers_agree(path: str, n_ranks: int, **options) -> DataError:
    with pytest.raises(DataError) as info:
        read_svmlight(path, **options)

    def body(comm):
        try:
            return read_svmlight_shard(path, comm, **options)
        except DataError as exc:
            return exc

    assert {str(r) for r in run_workers(n_ranks, body)} == {str(info.value)}
    return info.value


@pytest.mark.parametrize("n_ranks", [1, 2, 3, 4])
def test_the_first_bad_line_wins_whatever_the_kinds(tmp_path, n_ranks):
    """Found by the fuzzer: with two different problems, both readers named different
    lines (the whole-file reader checked each kind over the whole file in turn)."""
    good = [b"%d %d:1" % (i % 3, i % 4 + 1) for i in range(40)]
    lines = [*good[:2], b"1 1:1e39", *good[2:30], b"1 4:abc", *good[30:]]  # 3, then 33
    path = put(tmp_path, b"\n".join(lines) + b"\n")
    assert _both_readers_agree(path, n_ranks, dtype=np.float32).line == 3
    lines[2] = b"1 1:1e300"
    path = put(tmp_path, b"\n".join(lines) + b"\n")
    assert _both_readers_agree(path, n_ranks, check_norms=True).line == 3
    # "auto" with n_features: index 3 of n_features=3 is out of range only because index
    # 0 on line 41 makes the file zero-based; line 1 is the first bad line.
    lines = [b"1 3:1 9:1", *good[:39], b"0 0:1"]
    path = put(tmp_path, b"\n".join(lines) + b"\n")
    error = _both_readers_agree(path, n_ranks, n_features=3)
    assert error.line == 1 and "feature index 3 exceeds" in str(error)


def test_non_finite_values_are_refused_even_where_they_would_be_dropped(tmp_path):
    """Found by the fuzzer: a NaN/inf token beyond n_features was dropped silently by the
    compiled path but refused by the Python one.  Not a number is refused everywhere."""
    path = put(tmp_path, b"1 1:1\n2 30:1e3001\n")
    for reader in (read_svmlight, _parse_python):
        with pytest.raises(DataError, match=r":2: .*overflows float64"):
            reader(path, n_features=10, allow_extra_features=True)


def test_corrupt_compressed_file_gets_the_whole_file_readers_error(tmp_path):
    """Found by the fuzzer: on a truncated .gz every rank saw the break first and named
    line 1, where the whole-file reader named a bad line before the break."""
    lines = [b"%d %d:%d" % (i % 3, i % 4 + 1, i) for i in range(20000)]  # ~48 kB packed
    lines[5] = b"1 4:abc"
    path = put(tmp_path, _gz(b"\n".join(lines) + b"\n")[:-40], "t.gz")
    assert _both_readers_agree(path, 3).line == 6
    lines[5] = b"1 4:5"  # no bad line: the break itself, numbered alike
    path = put(tmp_path, _gz(b"\n".join(lines) + b"\n")[:-40], "t.gz")
    assert "cannot read (corrupt or truncated?)" in str(_both_readers_agree(path, 3))


# ---------------------------------------------------------------- the fuzzer


def test_fuzz_the_parser_briefly():
    """Three seconds of tests/fuzz_svmlight.py with a fixed seed (run it longer by hand)."""
    tried, findings = fuzz(3.0, seed=20240601, sharded_every=8)
    assert not findings, findings[0].report()
    assert tried > 20
