"""Several "hosts" on one Linux machine, for MPI jobs whose traffic crosses a real network.

Each host is a network namespace with one veth interface (``eth0``, address 10.a.b.i/24)
plugged into a bridge that lives in a separate "switch" namespace, so nothing is added to
the machine's own network namespace.  MPICH's hydra ``mpiexec`` runs inside the first host
and starts the other hosts' proxies through a launcher script that stands in for ``ssh``
(hydra calls it as ``LAUNCHER -x HOST COMMAND...``, the command line quoted for a remote
shell) and runs the command with ``ip netns exec`` in the namespace that holds HOST.  Every
process of a host also gets its own UTS namespace whose hostname is the host's name, so
``MPI.Get_processor_name()`` differs between hosts.

Hydra puts ranks on different hosts on different nodes, so MPICH sends their messages
through its network module; the default environment (:data:`NETWORK_ENV`) selects
libfabric's TCP provider on ``eth0``.  (MPICH's default UCX module would move the data by
shared memory instead, as UCX sees that the namespaces share one machine.)  The
interface's byte counters (:meth:`Host.counters`) show what crossed the network.

The namespaces share the filesystem, so every rank sees the same files and Python.

Needs Linux, root, iproute2 (``ip``), util-linux (``unshare``) and MPICH's hydra
``mpiexec`` (the ``mpich`` wheel has one); :func:`netns_available` says why not otherwise.
Every command runs with a timeout and is killed with its whole process group when it
expires; :func:`netns_hosts` kills whatever still runs in its namespaces and deletes them
on exit, even on error.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

IFNAME = "eth0"
"""The name of every host's network interface (each in its own namespace)."""

NETWORK_ENV = {
    "MPIR_CVAR_CH4_NETMOD": "ofi",  # libfabric, not UCX (UCX would use shared memory here)
    "FI_PROVIDER": "tcp",  # libfabric's TCP provider (with the ofi_rxm layer on top)
    "FI_TCP_IFACE": IFNAME,  # ... on this interface
}
"""Environment that makes MPICH send inter-host messages over TCP on :data:`IFNAME`."""

COMMAND_TIMEOUT = 30.0
"""Seconds each setup or teardown command may take."""

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


@dataclass(frozen=True)
class Host:
    """One emulated machine: a network namespace and its address on the shared subnet."""

    netns: str
    ip: str
    hostname: str
    ifname: str = IFNAME

    @property
    def netns_inode(self) -> int:
        """Inode of the namespace: a process in it has ``/proc/self/ns/net -> net:[inode]``."""
        return os.stat(f"/run/netns/{self.netns}").st_ino

    def run(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT, **kwargs):
        """Run ``argv`` in this host's network namespace (checked, output captured as text)."""
        return run_killing_group(
            [_tool("ip"), "netns", "exec", self.netns, *argv], timeout, check=True, **kwargs
        )

    def counters(self) -> dict[str, int]:
        """Bytes and packets received and sent so far on the host's interface."""
        names = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
        stats = f"/sys/class/net/{self.ifname}/statistics"
        out = self.run(["cat", *(f"{stats}/{name}" for name in names)]).stdout
        return dict(zip(names, map(int, out.split()), strict=True))


def run_killing_group(
    argv: Sequence[str],
    timeout: float,
    *,
    check: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> subprocess.CompletedProcess:
    """``subprocess.run(argv)`` with text output captured, in a new process group.

    When ``timeout`` expires the whole group is killed (SIGKILL) and
    :class:`subprocess.TimeoutExpired` is raised with the output so far.
    """
    proc = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env=None if env is None else dict(env), cwd=cwd,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        try:  # a process that left the group may still hold the pipes: do not wait for it
            out, err = proc.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            out, err = "", "(output lost: a process outside the group kept it open)"
        raise subprocess.TimeoutExpired(proc.args, timeout, output=out, stderr=err) from None
    except BaseException:  # KeyboardInterrupt: leave nothing behind
        _kill_group(proc.pid)
        proc.wait()
        raise
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check:
        result.check_returncode()
    return result


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise FileNotFoundError(f"{name}: not found")
    return path


def _ip(*args: str) -> subprocess.CompletedProcess:
    return run_killing_group([_tool("ip"), *args], COMMAND_TIMEOUT, check=True)


def _delete_netns(name: str) -> None:
    """Kill every process in namespace ``name`` (all started by us), then delete it."""
    try:
        pids = _ip("netns", "pids", name).stdout.split()
    except (subprocess.SubprocessError, OSError):
        pids = []
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    try:
        _ip("netns", "delete", name)
    except (subprocess.SubprocessError, OSError):
        pass


@contextmanager
def netns_hosts(n_hosts: int, prefix: str = "dsmlr") -> Iterator[list[Host]]:
    """``n_hosts`` hosts on one bridge (addresses 10.a.b.1, 10.a.b.2, ... /24).

    Namespace names are ``{prefix}-{pid}-{random}-h{i}`` (and ``-sw`` for the bridge), so
    parallel runs do not clash; everything is deleted on exit, even on error.
    """
    if n_hosts < 1 or n_hosts > 250:
        raise ValueError(f"n_hosts must be 1..250, got {n_hosts}")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,24}", prefix):
        raise ValueError(f"prefix must be 1..24 letters, digits, '-' or '_', got {prefix!r}")
    tag = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
    # Each bridge is its own isolated network, so subnets may repeat; random all the same.
    subnet = f"10.{1 + secrets.randbelow(254)}.{1 + secrets.randbelow(254)}"
    switch = f"{tag}-sw"
    created: list[str] = []
    try:
        _ip("netns", "add", switch)
        created.append(switch)
        _ip("-n", switch, "link", "set", "lo", "up")
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        hosts = []
        for i in range(n_hosts):
            host = Host(netns=f"{tag}-h{i}", ip=f"{subnet}.{i + 1}", hostname=f"{tag}-h{i}")
            _ip("netns", "add", host.netns)
            created.append(host.netns)
            _ip("-n", host.netns, "link", "set", "lo", "up")
            port = f"p{i}"
            _ip("-n", switch, "link", "add", port, "type", "veth",
                "peer", "name", host.ifname, "netns", host.netns)  # fmt: skip
            _ip("-n", switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", host.ifname)
            _ip("-n", host.netns, "link", "set", host.ifname, "up")
            hosts.append(host)
        yield hosts
    finally:
        for name in reversed(created):
            _delete_netns(name)


def _launcher_script(hosts: Sequence[Host]) -> str:
    """A stand-in for ``ssh``: ``launch [-x] HOST COMMAND...`` runs COMMAND on HOST."""
    ip, unshare = _tool("ip"), _tool("unshare")
    cases = "".join(
        f"  {h.ip}) ns={shlex.quote(h.netns)}; name={shlex.quote(h.hostname)} ;;\n" for h in hosts
    )
    return (
        "#!/bin/sh\n"
        "# Hydra launcher for network-namespace hosts (written by tests/netns_cluster.py).\n"
        "# Called like ssh: options (-x), the host, then one remote-shell command line.\n"
        'while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done\n'
        'host=$1; shift\ncase "$host" in\n'
        f"{cases}"
        '  *) echo "netns launcher: unknown host $host" >&2; exit 255 ;;\nesac\n'
        f'exec {shlex.quote(ip)} netns exec "$ns" {shlex.quote(unshare)} --uts '
        '/bin/sh -c "hostname $name && exec $*"\n'
    )


def mpiexec_across(
    hosts: Sequence[Host],
    ranks_per_host: int,
    argv: Sequence[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    *,
    cwd: str | os.PathLike | None = None,
    mpiexec_args: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """Run ``argv`` as an MPI job of ``ranks_per_host`` ranks on each host (stdout, stderr text).

    Ranks ``i * ranks_per_host ...`` run on ``hosts[i]``.  The environment is this
    process's, then :data:`NETWORK_ENV`, then ``env``; hydra passes it to every rank.  On
    timeout the job is killed and :class:`subprocess.TimeoutExpired` raised (with output).
    The command run is, in the first host's namespaces::

        mpiexec -hosts IP1:n,IP2:n,... -launcher ssh -launcher-exec LAUNCHER \\
            [mpiexec_args] -n N argv...
    """
    if MPIEXEC is None:
        raise FileNotFoundError("mpiexec: not found (pip install mpich)")
    if not hosts or ranks_per_host < 1:
        raise ValueError("need at least one host and one rank per host")
    with tempfile.TemporaryDirectory(prefix="dsmlr-netns-") as tmp:
        launcher = Path(tmp) / "launch"
        launcher.write_text(_launcher_script(hosts))
        launcher.chmod(0o755)
        job = [
            MPIEXEC,
            "-hosts", ",".join(f"{h.ip}:{ranks_per_host}" for h in hosts),
            "-launcher", "ssh", "-launcher-exec", str(launcher),
            *mpiexec_args,
            "-n", str(ranks_per_host * len(hosts)),
            *argv,
        ]  # fmt: skip
        first = hosts[0]
        inner = f"hostname {shlex.quote(first.hostname)} && exec {shlex.join(job)}"
        cmd = [_tool("ip"), "netns", "exec", first.netns, _tool("unshare"), "--uts",
               "/bin/sh", "-c", inner]  # fmt: skip
        return run_killing_group(
            cmd, timeout, env={**os.environ, **NETWORK_ENV, **(env or {})}, cwd=cwd
        )


@functools.cache
def netns_available() -> str | None:
    """None when :func:`netns_hosts` and :func:`mpiexec_across` work here, else why not."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux")):
        try:
            _tool(tool)
        except FileNotFoundError:
            return f"no `{tool}` command (install {package})"
    if MPIEXEC is None:
        return "no mpiexec (pip install '.[mpi]')"
    try:
        info = run_killing_group([MPIEXEC, "-info"], COMMAND_TIMEOUT).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{MPIEXEC} -info failed: {exc}"
    if "HYDRA" not in info:
        return f"{MPIEXEC} is not MPICH's hydra mpiexec"
    try:
        with netns_hosts(2, prefix="dsmlr-probe") as hosts:
            for host in hosts:
                host.counters()
                host.run([_tool("unshare"), "--uts", "hostname", host.hostname])
    except subprocess.CalledProcessError as exc:
        detail = ((exc.stderr or "").strip().splitlines() or [f"status {exc.returncode}"])[-1]
        return f"cannot set up network namespaces: {shlex.join(exc.cmd)}: {detail}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot set up network namespaces: {exc}"
    return None
