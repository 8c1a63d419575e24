"""Starting or joining the Ray that runs a sweep's trials, and the environment Ray and Tune are started with.

A local Ray is bound to loopback with no dashboard unless asked, and a Ray that will not start is one line with
its cause and its fix, not Ray's traceback.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from trainables.errors import UserError

# Ray's own snapshots are not what a resume reads, but keep them fresh for anyone who looks.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "10")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Ctrl-C and SIGTERM are ours to handle (graceful stop, then a resume hint); see sweep.runner.Interrupt.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
# The sweep passes its own loggers (sweep.trackers: Ray's CSV and JSON, and TensorBoard with plain tags).
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def token_path() -> Path:
    """Where Ray reads its authentication token (its default, which `ray start` and `ray.init` share)."""
    return Path.home() / ".ray" / "auth_token"


def secure_token() -> Path:
    """The local Ray's authentication token, readable by this user only (0600 in a 0700 folder).

    Binding to loopback does not keep other local users out: the token does. Ray writes it with the umask's mode
    (0644 usually), so it is made here first, privately, and an existing one is made private; Ray then reads it.
    """
    path = token_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.parent.stat().st_mode & 0o077:
        os.chmod(path.parent, 0o700)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return path
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # what Ray's own generator makes: 256 random bits
    return path


def init_ray(address: str | None, dashboard: bool, num_cpus: int | None = None) -> None:
    """Connect to ``address`` or start a local Ray; a Ray that will not start is one line with its cause."""
    import ray

    if ray.is_initialized():
        return
    _keep_credentials_out_of_trials()
    try:
        if not address and os.environ.get("RAY_AUTH_MODE", "token") == "token":
            secure_token()
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


# Credentials that Ray Tune copies from the driver's environment into every trial's runtime environment, where Ray's
# runtime-env agent logs them in clear text (RAY_TUNE_NOTES; ray/tune/execution/class_cache.py).
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


def _keep_credentials_out_of_trials() -> None:
    """Tune must not ship the driver's cloud credentials to the trials: a local Ray's workers inherit the driver's
    environment anyway, and a cluster's nodes read their own (an instance role, or the environment cluster.yaml
    sets up). Nothing then puts a credential into Ray's logs or a trial's recorded environment."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = frozenset(class_cache.ENV_VARS_TO_PROPAGATE) - set(CREDENTIALS)
