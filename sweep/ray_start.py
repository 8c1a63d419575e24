"""Starting or joining the Ray that runs a sweep's trials, and the environment Ray and Tune are started with.

A local Ray is bound to loopback with no dashboard unless asked, and a Ray that will not start is one line with
its cause and its fix, not Ray's traceback.
"""

from __future__ import annotations

import logging
import os

from trainables.errors import UserError

# Ray's own snapshots are not what a resume reads, but keep them fresh for anyone who looks.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "10")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Ctrl-C and SIGTERM are ours to handle (graceful stop, then a resume hint); see sweep.runner.Interrupt.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")


def init_ray(address: str | None, dashboard: bool, num_cpus: int | None = None) -> None:
    """Connect to ``address`` or start a local Ray; a Ray that will not start is one line with its cause."""
    import ray

    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            return
        # A local Ray executes whatever reaches its ports: bind it to loopback (sweep.cli and the tests' conftest
        # set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is imported, which it needs), and no dashboard unless
        # asked.
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    except Exception as exc:  # not the storage's fault, nor a bug of ours: Ray's environment
        cause = " ".join(str(exc).split()) or type(exc).__name__
        if "AF_UNIX path length" in cause:
            fix = "set RAY_TMPDIR to a short directory, e.g. RAY_TMPDIR=/tmp/ray"
        elif address:
            fix = "check that the cluster at that address is up and runs Ray 2.60"
        else:
            fix = "see Ray's logs under $RAY_TMPDIR (default /tmp/ray)"
        where = f"connect to the Ray cluster at {address}" if address else "start a local Ray"
        raise UserError(f"could not {where} ({cause[:300]}); {fix}") from exc
