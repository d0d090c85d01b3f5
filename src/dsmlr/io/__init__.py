"""File formats: svmlight/LIBSVM data files (and, separately, model directories)."""

from dsmlr.io.sharded import Shard, byte_ranges, global_classes, read_svmlight_shard
from dsmlr.io.svmlight import SvmlightData, read_svmlight, write_svmlight

__all__ = [
    "Shard",
    "SvmlightData",
    "byte_ranges",
    "global_classes",
    "read_svmlight",
    "read_svmlight_shard",
    "write_svmlight",
]
