"""MPI jobs across emulated hosts: network namespaces joined by veth pairs and a bridge.

The ranks of different hosts reach each other only over the hosts' ``eth0`` interfaces,
so these tests show that a job spread over machines works, and the interfaces' byte
counters show how much crossed the network.  Skipped where namespaces cannot be made
(not root, no iproute2, no MPICH hydra ``mpiexec``); see ``tests/netns_cluster.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NoReturn

import pytest

from netns_cluster import Host, mpiexec_across, netns_available, netns_hosts

pytest.importorskip("mpi4py")

_UNAVAILABLE = netns_available()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=str(_UNAVAILABLE))

DEADLOCK_SECONDS = 120
RING_BYTES = 4 * 2**20  # each rank's Sendrecv payload

RING_PROGRAM = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    n = int(sys.argv[1]) // 8
    left, right = (rank - 1) % size, (rank + 1) % size
    send = np.arange(n, dtype=np.float64) + 1e7 * rank
    recv = np.empty_like(send)
    comm.Sendrecv(send, dest=right, recvbuf=recv, source=left)
    total = np.empty(1000, dtype=np.float64)
    comm.Allreduce(np.full(1000, rank + 1.0), total, op=MPI.SUM)
    report = {
        "rank": rank,
        "size": size,
        "processor": MPI.Get_processor_name(),
        "netns": os.readlink("/proc/self/ns/net"),
        "received_from_left": bool(np.array_equal(recv, np.arange(n) + 1e7 * left)),
        "allreduce": sorted(set(total.tolist())),
    }
    reports = comm.gather(report, root=0)  # one print: ranks' lines would interleave
    if rank == 0:
        print("REPORTS " + json.dumps(reports), flush=True)
    """
)


def _fail_with_output(what: str, exc: subprocess.TimeoutExpired) -> NoReturn:
    pytest.fail(f"{what}: killed after {exc.timeout}s (deadlock?)\n{exc.output}\n{exc.stderr}")


# For tests of the dsmlr CLI across hosts (``dsmlr train`` under MPI): use the
# ``two_hosts`` fixture and ``dsmlr_across``.  Checked by hand: a 3-epoch ``train`` of
# ``dsmlr generate`` data with 2 ranks per host runs this way.
def dsmlr_across(
    hosts: list[Host], ranks_per_host: int, args: list[str], cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess:
    """``python -m dsmlr ARGS`` with ``ranks_per_host`` ranks on each emulated host.

    For CLI tests over emulated machines, e.g.
    ``dsmlr_across(two_hosts, 2, ["train", "d.train.svm", "--model", "m"], data_dir)``;
    a deadlock fails the calling test after ``timeout`` seconds.
    """
    try:
        return mpiexec_across(
            hosts, ranks_per_host, [sys.executable, "-m", "dsmlr", *args], timeout, cwd=cwd
        )
    except subprocess.TimeoutExpired as exc:
        _fail_with_output(f"dsmlr {' '.join(args)} across {len(hosts)} hosts", exc)


@pytest.fixture(scope="module")
def two_hosts():
    with netns_hosts(2) as hosts:
        yield hosts


def test_ring_and_allreduce_cross_the_hosts_network(two_hosts, tmp_path):
    program = tmp_path / "ring.py"
    program.write_text(RING_PROGRAM)
    before = [host.counters() for host in two_hosts]
    try:
        run = mpiexec_across(
            two_hosts, 2, [sys.executable, str(program), str(RING_BYTES)], DEADLOCK_SECONDS,
            cwd=tmp_path,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        _fail_with_output("ring job", exc)
    after = [host.counters() for host in two_hosts]
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    [line] = [ln for ln in run.stdout.splitlines() if ln.startswith("REPORTS ")]
    reports = json.loads(line.removeprefix("REPORTS "))

    assert [r["rank"] for r in reports] == [0, 1, 2, 3]
    assert all(r["size"] == 4 and r["received_from_left"] for r in reports), reports
    assert all(r["allreduce"] == [1.0 + 2 + 3 + 4] for r in reports), reports
    # Ranks 0, 1 ran on the first host and 2, 3 on the second: in its network namespace,
    # under its hostname.
    for r in reports:
        host = two_hosts[r["rank"] // 2]
        assert r["netns"] == f"net:[{host.netns_inode}]", (r, host)
        assert r["processor"] == host.hostname, (r, host)
    own = os.stat("/proc/self/ns/net").st_ino
    assert len({two_hosts[0].netns_inode, two_hosts[1].netns_inode, own}) == 3

    # Ring 0 -> 1 -> 2 -> 3 -> 0: 1 -> 2 and 3 -> 0 cross between the hosts, so each
    # host's interface sent and received at least one whole payload.
    for host, b, a in zip(two_hosts, before, after, strict=True):
        sent, received = a["tx_bytes"] - b["tx_bytes"], a["rx_bytes"] - b["rx_bytes"]
        print(f"{host.netns} {host.ip} {host.ifname}: sent {sent} B, received {received} B")
        assert sent >= RING_BYTES, (host, b, a)
        assert received >= RING_BYTES, (host, b, a)


def test_dsmlr_across_two_hosts_trains_the_one_host_model(two_hosts, tmp_path):
    """4 ranks on 2 emulated machines give exactly the model of 4 ranks on one, and the
    class blocks really travel over the hosts' network."""
    gen = subprocess.run(
        [sys.executable, "-m", "dsmlr", "generate", "d", "--samples", "1500", "--features",
         "400", "--classes", "40", "--seed", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    train = ["train", "d.train.svm", "--epochs", "3", "--seed", "0", "--quiet"]
    before = [host.counters() for host in two_hosts]
    run = dsmlr_across(two_hosts, 2, [*train, "--model", "across"], tmp_path)
    after = [host.counters() for host in two_hosts]
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    mpiexec = Path(sys.executable).parent / "mpiexec"
    local = subprocess.run(
        [str(mpiexec), "-n", "4", sys.executable, "-m", "dsmlr", *train, "--model", "local"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    blocks = sorted((tmp_path / "local").glob("block_*.npy"))
    assert len(blocks) == 4
    for block in blocks:
        assert block.read_bytes() == (tmp_path / "across" / block.name).read_bytes()
    # Each epoch, every block crosses between the hosts at least once per ring pass.
    model_bytes = sum(b.stat().st_size for b in blocks)
    for b, a in zip(before, after, strict=True):
        assert a["tx_bytes"] - b["tx_bytes"] >= model_bytes
