"""File formats: svmlight/LIBSVM and ``.npz`` data files, model export (and, separately,
model directories)."""

from dsmlr.io.datasets import Dataset, load_dataset, read_dataset_shard, save_dataset
from dsmlr.io.export import export_npz
from dsmlr.io.sharded import Shard, byte_ranges, global_classes, read_svmlight_shard
from dsmlr.io.svmlight import SvmlightData, read_svmlight
from dsmlr.io.svmlight_write import write_svmlight

__all__ = [
    "Dataset",
    "Shard",
    "SvmlightData",
    "byte_ranges",
    "export_npz",
    "global_classes",
    "load_dataset",
    "read_dataset_shard",
    "read_svmlight",
    "read_svmlight_shard",
    "save_dataset",
    "write_svmlight",
]
