"""``dsmlr info``: the report, its JSON form, and missing or broken optional parts."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest

import dsmlr
import dsmlr.comm.mpi as mpi_module
import dsmlr.info as info_module
from dsmlr.cli import main
from dsmlr.info import collect_info

KEYS = {
    "dsmlr", "python", "platform", "numpy", "scipy", "scikit-learn", "numba", "mpi4py",
    "mpi_library", "torch", "gpus", "matplotlib", "tqdm", "cpu_cores", "cpu_cores_usable",
    "mpi_world_size", "shared_memory",
}  # fmt: skip


def _field(text: str, label: str) -> str:
    """The value printed after ``label`` in ``dsmlr info``'s text report."""
    for line in text.splitlines():
        if line.startswith(label + "  "):
            return line[len(label) :].strip()
    raise AssertionError(f"no {label!r} line in:\n{text}")


def _fake_torch(cuda_devices: list[str]) -> types.ModuleType:
    torch = types.ModuleType("torch")
    torch.__version__ = "2.99.0"
    torch.cuda = types.SimpleNamespace(
        is_available=lambda: bool(cuda_devices),
        device_count=lambda: len(cuda_devices),
        get_device_name=lambda i: cuda_devices[i],
    )
    return torch


def test_info_prints_versions_and_resources(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert _field(out, "dsmlr") == dsmlr.__version__
    import numpy

    assert _field(out, "numpy") == numpy.__version__
    assert _field(out, "MPI world size") == "1"
    assert _field(out, "CPU cores") == str(os.cpu_count())
    for label in ("python", "scipy", "scikit-learn", "numba", "mpi4py", "MPI library", "torch",
                  "GPUs", "matplotlib", "tqdm"):  # fmt: skip
        assert _field(out, label)


def test_info_json_is_one_object_with_every_key(capsys):
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == KEYS
    assert report["dsmlr"] == dsmlr.__version__
    assert report["mpi_world_size"] == 1
    assert report["cpu_cores"] == os.cpu_count()
    assert isinstance(report["gpus"], list)


def test_torch_that_cannot_be_imported_is_not_installed(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes "import torch" fail
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert _field(out, "torch") == "not installed"
    assert _field(out, "GPUs") == "none"


def test_gpus_are_listed_by_name(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(["NVIDIA H100", "NVIDIA H100"]))
    report = collect_info()
    assert report["torch"] == "2.99.0"
    assert report["gpus"] == ["NVIDIA H100", "NVIDIA H100"]
    assert main(["info"]) == 0
    assert _field(capsys.readouterr().out, "GPUs") == "0: NVIDIA H100, 1: NVIDIA H100"
    monkeypatch.setitem(sys.modules, "torch", _fake_torch([]))  # a CPU-only torch
    assert collect_info()["gpus"] == []


def test_mpi_library_that_fails_to_load_is_reported_not_raised(monkeypatch):
    pytest.importorskip("mpi4py")
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)  # take the child-process path
    monkeypatch.setattr(mpi_module, "_LIBRARY_PROBE", "raise RuntimeError('cannot load libmpi.so')")
    report = collect_info()
    assert report["mpi_library"] == "unavailable (RuntimeError: cannot load libmpi.so)"


def test_without_mpi4py(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    report = collect_info()
    assert report["mpi4py"] == "not installed"
    assert report["mpi_library"] == "unavailable (mpi4py not installed)"


@pytest.mark.parametrize("rank", ["0", "1"])
def test_under_a_launcher_only_rank_0_prints(monkeypatch, capsys, rank):
    # mpi4py blocked: MPI_Init with a faked launcher environment would wait for a job
    # that does not exist.  The launcher's variables then give rank and size.
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setenv("PMI_SIZE", "3")
    monkeypatch.setenv("PMI_RANK", rank)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    if rank == "0":
        assert _field(out, "MPI world size") == "3"
    else:
        assert out == ""


def test_info_says_where_ranks_share_the_blocks(monkeypatch, capsys):
    monkeypatch.setenv("DSMLR_SHARED_MEMORY", "0")
    assert collect_info()["shared_memory"].startswith("off (DSMLR_SHARED_MEMORY=0")
    monkeypatch.delenv("DSMLR_SHARED_MEMORY")
    monkeypatch.setattr(info_module, "shared_memory_room", lambda: 3 * 2**30)
    assert main(["info"]) == 0
    assert _field(capsys.readouterr().out, "shared memory").startswith("3.0 GiB free in /dev/shm")
