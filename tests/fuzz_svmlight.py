"""A mutation fuzzer for the LIBSVM parser (standard library and numpy only).

Run it as a script::

    python tests/fuzz_svmlight.py [--seconds N] [--seed S] [--no-sharded]

It builds valid LIBSVM files, mutates them (byte flips, insertions of bytes and of
tokens that parsers trip on, deletions, truncation, splicing of tokens and lines, and
compression, whole or truncated) and reads each mutant through
:func:`~dsmlr.io.read_svmlight` with varied options.  Every read must end in one of two
ways:

* a well-formed result: canonical CSR of the requested dtype with finite values and
  indices inside its width, one finite label per row, the width asked for; or
* a :class:`~dsmlr.errors.DataError` whose message is one line starting with the file
  name (``file: ...`` or ``file:line: ...``).

Anything else (another exception, a malformed result) is a finding.  Two differential
checks also count as findings: the pure-Python parser must give exactly what
:func:`read_svmlight` gives (the same arrays, or the same error message), since the
compiled fast path is only a shortcut; and, every few inputs, the per-rank reader
:func:`~dsmlr.io.read_svmlight_shard` on 2 or 3 in-process ranks must give the same rows
(or the same error on every rank).  Each finding prints the input and the problem, and
the script exits with status 1; it exits 0 when the time is up without one.
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from dsmlr.comm import run_workers
from dsmlr.errors import DataError
from dsmlr.io import read_svmlight, read_svmlight_shard
from dsmlr.io.svmlight import _parse_python

__all__ = ["Finding", "check_input", "fuzz", "main", "mutate", "valid_file"]

# Fragments that sit on the parser's decision boundaries: separators, comments, line
# ends, non-finite and overflowing numbers, index 0 and huge or negative indices, bytes
# that are not text, and compression magic.
INTERESTING = [
    b":", b"::", b"#", b" ", b"\t", b"\n", b"\r\n", b"\r", b"\x0b", b"\x0c", b"\x00",
    b"\xff", b"\xef\xbb\xbf", b"\xff\xfe", b"\x1f\x8b", b"BZh", b"nan", b"-inf", b"inf",
    b"1e400", b"-1e400", b"1e300", b"1e39", b"1e19", b"5e-324", b"0:1", b"-1:1",
    b"2147483647:1", b"2147483648:1", b"99999999999999999999:1", b"qid:1", b"qid:x",
    b"1,2", b"+", b"-", b".", b"e", b"_", b"0x1", b"1:", b":1", b"1:1:1", b"\xc3\xa9",
]  # fmt: skip


@dataclass
class Finding:
    """An input the parser mishandled, and what went wrong."""

    data: bytes
    options: dict
    problem: str

    def report(self) -> str:
        return f"FINDING: {self.problem}\n  options: {self.options}\n  input: {self.data!r}"


# ---------------------------------------------------------------- inputs


def valid_file(rng: random.Random) -> bytes:
    """A small valid LIBSVM file in varied formatting."""
    zero_based = rng.random() < 0.3
    lines = []
    if rng.random() < 0.2:
        lines.append(b"# a header comment")
    for _ in range(rng.randint(1, 12)):
        label = rng.choice([b"1", b"-1", b"+1", b"0", b"3", b"2.5", b"7", b"1e2"])
        n = rng.randint(0, 6)
        cols = sorted(rng.sample(range(0 if zero_based else 1, 40), n))
        if rng.random() < 0.2:
            rng.shuffle(cols)  # legal: the parser sorts them
        toks = [label]
        if rng.random() < 0.1:
            toks.append(b"qid:%d" % rng.randint(1, 5))
        for c in cols:
            value = rng.choice([repr(rng.uniform(-5, 5)), str(rng.randint(-9, 9) or 1),
                                f"{rng.uniform(-1, 1):.3e}", "1"])  # fmt: skip
            toks.append(b"%d:%s" % (c, value.encode()))
        line = rng.choice([b" ", b"\t", b"  "]).join(toks)
        if rng.random() < 0.1:
            line += b" # trailing comment 1:2"
        lines.append(line)
        if rng.random() < 0.1:
            lines.append(b"")
    eol = rng.choice([b"\n", b"\r\n"])
    return eol.join(lines) + (eol if rng.random() < 0.9 else b"")


def _tokens(data: bytes) -> list[bytes]:
    return data.split() or [b"1"]


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    """Apply one to four random mutations to ``data``."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(9)
        pos = rng.randint(0, len(out))
        if kind == 0 and out:  # flip a byte
            i = rng.randrange(len(out))
            out[i] = rng.randrange(256)
        elif kind == 1:  # insert random bytes
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif kind == 2:  # insert an interesting fragment
            out[pos:pos] = rng.choice(INTERESTING)
        elif kind == 3 and out:  # delete a run
            del out[pos : pos + rng.randint(1, 8)]
        elif kind == 4:  # truncate
            del out[pos:]
        elif kind == 5:  # splice a token from another file (or this one) in
            tok = rng.choice(_tokens(rng.choice(corpus)))
            out[pos:pos] = rng.choice([b" ", b""]) + tok + rng.choice([b" ", b""])
        elif kind == 6:  # replace a whole token by an interesting one
            toks = _tokens(bytes(out))
            toks[rng.randrange(len(toks))] = rng.choice(INTERESTING)
            out = bytearray(b" ".join(toks) + b"\n")
        elif kind == 7:  # duplicate or swap lines
            lines = bytes(out).split(b"\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            if rng.random() < 0.5:
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            out = bytearray(b"\n".join(lines))
        else:  # splice a slice of another file
            other = rng.choice(corpus)
            a = rng.randint(0, len(other))
            out[pos:pos] = other[a : a + rng.randint(1, 40)]
    if rng.random() < 0.05:
        packed = gzip.compress(bytes(out))
        return packed[: rng.randint(0, len(packed))] if rng.random() < 0.3 else packed
    return bytes(out)


def _options(rng: random.Random) -> dict:
    options: dict = {}
    if rng.random() < 0.3:
        options["zero_based"] = rng.choice([True, False])
    if rng.random() < 0.3:
        options["n_features"] = rng.randint(1, 45)
        options["allow_extra_features"] = rng.random() < 0.5
    if rng.random() < 0.3:
        options["dtype"] = np.float32
    if rng.random() < 0.3:
        options["check_norms"] = True
    return options


# ---------------------------------------------------------------- checks


def _outcome(read: Callable[[], object], path: str) -> tuple[object | None, str | None]:
    """(result, None), or (None, message) for a well-formed DataError; else raise."""
    try:
        return read(), None
    except DataError as exc:
        message = str(exc)
        if not message.startswith(f"{path}:"):
            raise AssertionError(
                f"DataError does not start with the file name: {message!r}"
            ) from None
        if "\n" in message or exc.path != path:
            raise AssertionError(
                f"DataError is not one line naming the file: {message!r}"
            ) from None
        return None, message


def _check_result(data, path: str, options: dict) -> None:
    X, y = data.X, data.y
    dtype = np.dtype(options.get("dtype", np.float64))
    assert isinstance(X, sp.csr_matrix), type(X)
    assert X.has_canonical_format, "X is not canonical CSR"
    assert X.dtype == dtype, (X.dtype, dtype)
    assert np.isfinite(X.data).all(), "X holds non-finite values"
    assert X.shape[0] == len(y) > 0, (X.shape, len(y))
    assert y.dtype in (np.int64, np.float64) and np.isfinite(y).all(), y
    if X.nnz:
        assert 0 <= X.indices.min() and X.indices.max() < X.shape[1], "index out of range"
    if "n_features" in options:
        assert X.shape[1] == options["n_features"], (X.shape, options)
    if options.get("check_norms"):
        sq = np.asarray(X.multiply(X).sum(axis=1), dtype=np.float64).ravel()
        assert (sq <= np.finfo(dtype).max).all(), "a row's squared norm overflows"
    assert data.path == path


def _same(a, b) -> bool:
    return (
        a.X.shape == b.X.shape and a.X.dtype == b.X.dtype and a.y.dtype == b.y.dtype
        and a.zero_based == b.zero_based and np.array_equal(a.y, b.y)
        and np.array_equal(a.X.indptr, b.X.indptr) and np.array_equal(a.X.indices, b.X.indices)
        and np.array_equal(a.X.data, b.X.data)
    )  # fmt: skip


def _sharded_problem(path: str, n: int, options: dict, whole, error: str | None) -> str | None:
    def body(comm):
        try:
            return read_svmlight_shard(path, comm, **options)
        except DataError as exc:
            return exc

    parts = run_workers(n, body)
    if error is not None:
        messages = {str(p) if isinstance(p, DataError) else "(no error)" for p in parts}
        return None if messages == {error} else f"{n} ranks raised {messages}, whole: {error!r}"
    if any(isinstance(p, DataError) for p in parts):
        return f"{n} ranks raised {[str(p) for p in parts]} where the whole file reads"
    X = sp.vstack([p.X for p in parts], format="csr")
    y = np.concatenate([p.y for p in parts])
    same = (
        X.shape == whole.X.shape and (X != whole.X).nnz == 0 and np.array_equal(y, whole.y)
        and y.dtype == whole.y.dtype and {p.zero_based for p in parts} == {whole.zero_based}
    )  # fmt: skip
    return None if same else f"{n} ranks' shards differ from the whole file"


def check_input(
    data: bytes, options: dict, workdir: Path, *, sharded_ranks: int = 0
) -> Finding | None:
    """Read ``data`` every way; a :class:`Finding` if anything breaks the contract."""
    path = str(workdir / "fuzz-input.svm")
    Path(path).write_bytes(data)
    try:
        fast, fast_error = _outcome(lambda: read_svmlight(path, **options), path)
        if fast is not None:
            _check_result(fast, path, options)
        slow, slow_error = _outcome(lambda: _parse_python(path, **options), path)
        if fast_error != slow_error:
            return Finding(data, options, f"parsers disagree: {fast_error!r} vs {slow_error!r}")
        if fast is not None and not _same(fast, slow):
            return Finding(data, options, "parsers give different results")
        if sharded_ranks:
            problem = _sharded_problem(path, sharded_ranks, options, fast, fast_error)
            if problem is not None:
                return Finding(data, options, problem)
    except Exception:
        return Finding(data, options, traceback.format_exc().rstrip())
    return None


def fuzz(
    seconds: float,
    seed: int,
    *,
    sharded_every: int = 8,
    max_findings: int = 1,
    log: Callable[[str], None] | None = None,
) -> tuple[int, list[Finding]]:
    """Fuzz for ``seconds``; return the number of inputs tried and the findings.

    Deterministic for a given ``seed`` up to the time limit (the same inputs in the same
    order).  ``sharded_every`` > 0 also reads every that-many-th input on 2 or 3 ranks.
    """
    rng = random.Random(seed)
    corpus = [valid_file(rng) for _ in range(64)]
    findings: list[Finding] = []
    deadline = time.monotonic() + seconds
    tried = 0
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dropped values" warnings are expected here
        while time.monotonic() < deadline and len(findings) < max_findings:
            base = rng.choice(corpus) if rng.random() < 0.9 else valid_file(rng)
            data = mutate(base, rng, corpus) if rng.random() < 0.95 else base
            ranks = rng.choice([2, 3]) if sharded_every and tried % sharded_every == 0 else 0
            finding = check_input(data, _options(rng), Path(tmp), sharded_ranks=ranks)
            tried += 1
            if finding is not None:
                findings.append(finding)
                if log:
                    log(finding.report())
            elif rng.random() < 0.05 and len(data) < 4096:
                corpus.append(data)  # survivors (valid or not) seed later mutations
    return tried, findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run (60)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--no-sharded", action="store_true", help="skip the per-rank reader")
    parser.add_argument("--max-findings", type=int, default=1, metavar="N",
                        help="stop after N findings (1)")  # fmt: skip
    args = parser.parse_args(argv)
    tried, findings = fuzz(
        args.seconds, args.seed, sharded_every=0 if args.no_sharded else 8,
        max_findings=args.max_findings, log=print,
    )  # fmt: skip
    print(f"{tried} inputs, {len(findings)} finding(s) (seed {args.seed})")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
