"""File formats: svmlight/LIBSVM data files (and, separately, model directories)."""

from dsmlr.io.svmlight import SvmlightData, read_svmlight, write_svmlight

__all__ = ["SvmlightData", "read_svmlight", "write_svmlight"]
