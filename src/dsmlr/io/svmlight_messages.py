"""What was wrong with a line of a LIBSVM / svmlight file: the messages the reader's
errors give (:mod:`dsmlr.io.svmlight`)."""

from __future__ import annotations

import numpy as np

#: The bytes a text line may hold (printable ASCII and white space).
_TEXT_BYTES = bytes(range(32, 127)) + b"\t\n\r\x0b\x0c"
# LIBSVM itself stores indices as C ints, and so does scikit-learn's loader (the fast
# path), so a larger index is not LIBSVM data.  Refusing it here names the line, where
# otherwise training would ask for terabytes of weights and fail without naming it.
_MAX_INDEX = 2**31 - 1


def _too_large(idx: int) -> str:
    return f"feature index {idx} is implausibly large (LIBSVM indices stop at {_MAX_INDEX})"


def _non_finite(what: str, tok: bytes) -> str:
    """``nan``/``inf`` spelled out, or a number beyond float64 (``1e400``): say which."""
    if any(word in tok.lower() for word in (b"nan", b"inf")):
        return f"non-finite {what} {_q(tok)}"
    return f"{what} {_q(tok)} overflows float64"


def _range_problem(idx: int, n_features: int, zero_based: bool) -> str:
    why = f" (zero-based indices must be below {n_features})" if zero_based else ""
    return f"feature index {idx} exceeds n_features={n_features} of the training data{why}"


def _heavy_problem(largest: float, dtype: np.dtype) -> str:
    return (
        f"values too large: the row's squared norm overflows {dtype.name} (largest "
        f"|value| {largest:.6g}); rescale the features"
    )


def _q(tok: bytes) -> str:
    text = tok.decode("ascii", "backslashreplace")
    return f"'{text[:37]}...'" if len(text) > 40 else f"'{text}'"


_NOT_TEXT = "line is not text: found binary or non-ASCII bytes (not an svmlight file?)"


def _not_text(line: bytes, lineno: int) -> str:
    # Windows editors save "Unicode" text as UTF-16: worth saying, it is easily fixed.
    if lineno == 1 and line.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "file is UTF-16 text: save it as ASCII or UTF-8"
    return _NOT_TEXT


def _bare_cr(line: bytes) -> bool:
    """Lines ended by a lone carriage return (classic Mac OS) read as one long line."""
    return b"\r" in line.rstrip()


_BARE_CR = "lines end in bare carriage returns (\\r): convert the file to \\n line endings"


def _label_problem(head: bytes, line: bytes, lineno: int) -> str:
    if line.translate(None, _TEXT_BYTES):
        return _not_text(line, lineno)
    if b":" in head:
        return f"missing label: line starts with feature {_q(head)}"
    if b"," in head:
        return f"multi-label line (labels {_q(head)}) is not supported; use one label per line"
    return f"non-numeric label {_q(head)}"


def _token_problem(tok: bytes, line: bytes, lineno: int) -> str:
    if line.translate(None, _TEXT_BYTES):  # anything left is neither printable nor space
        return _not_text(line, lineno)
    if _bare_cr(line):
        return _BARE_CR
    i_s, sep, v_s = tok.partition(b":")
    if not sep:
        return f"malformed token {_q(tok)}: expected index:value"
    if b":" in v_s:
        return f"malformed token {_q(tok)}: more than one ':'"
    try:
        int(i_s)
    except ValueError:
        return f"malformed token {_q(tok)}: feature index is not an integer"
    if not v_s:
        return f"missing value in token {_q(tok)}"
    return f"non-numeric value in token {_q(tok)}"
