"""Where the trainable stages a checkpoint before Ray copies it to storage (issue 15, item 4).

The driver's experiment-state save copies Ray's driver staging folder (``experiment_driver_staging_path``) to the
experiment directory in a background thread, with no exclusions, while trials run. A checkpoint staged under that
folder (``tune.get_context().get_trial_dir()`` is in it) was copied half-written, or vanished under the copy: a
``FileNotFoundError`` traceback mid-sweep. These tests run the driver's own sync command while a stage exists, and
check that nothing is staged anywhere after a trial ends, however it ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import ray.cloudpickle

from sweep import ledger
from trainables import tune_entry
from trainables.files import HISTORY_FILE, STATE_FILE

TINY = {
    "strategy": "hard",
    "epochs": 2,
    "limit": 120,
    "width": 8,
    "proj_hidden_dim": 16,
    "proj_dim": 8,
    "probe_epochs": 5,
    "batch_size": 32,
    "num_threads": 1,
}
PROBE_KEY = "_probe_dir"  # where the worker writes what it saw; popped before the real trainable sees the config

# Ray's workers cannot import this file (tests/ is not on their path): ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _trial_dirname(trial) -> str:
    return ledger.trial_dirname(trial.config[tune_entry.TRIAL_KEY], trial.config["strategy"])


def _probed(config):
    """The real trainable, with ``tune.report`` wrapped: at each report, while the stage is complete and not yet
    copied, run the driver's experiment-state sync exactly as the driver builds it, and record what it copied."""
    from ray.train._internal.session import get_session

    config = dict(config)
    out = Path(config.pop(PROBE_KEY))
    real_report = tune_entry.tune.report

    def spy(metrics, *, checkpoint=None):
        storage = get_session().storage  # Ray's StorageContext of this trial
        source = Path(storage.experiment_driver_staging_path)  # what the driver's sync walks (experiment_state.py)
        stage = Path(checkpoint.path)
        copy = out / f"sync_epoch_{metrics['epoch']}"
        # _ExperimentCheckpointManager.sync_up_experiment_state: syncer.sync_up(driver staging path, experiment dir)
        fn, kwargs = storage.syncer._sync_up_command(local_path=str(source), uri=str(copy))
        fn(**kwargs)
        record = {
            "epoch": metrics["epoch"],
            "pid": os.getpid(),
            "stage": str(stage),
            "stage_files": sorted(p.name for p in stage.iterdir()),
            "sync_source": str(source),
            "trial_dir": tune_entry.tune.get_context().get_trial_dir(),
            "trial_driver_staging_path": storage.trial_driver_staging_path,
            "trial_working_directory": storage.trial_working_directory,
            "experiment_dir": storage.experiment_fs_path,
            "copied_checkpoint_files": sorted(
                str(p.relative_to(copy)) for p in copy.rglob("*") if p.name in (STATE_FILE, HISTORY_FILE)
            ),
        }
        with open(out / "probe.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        real_report(metrics, checkpoint=checkpoint)

    with mock.patch.object(tune_entry.tune, "report", spy):
        tune_entry.trainable(config)


def _fit(storage: Path | str, probe: Path, **run_kwargs):
    from ray import tune

    probe.mkdir(parents=True, exist_ok=True)
    config = {**TINY, tune_entry.TRIAL_KEY: 0, tune_entry.SESSION_KEY: 0, tune_entry.RESUME_KEY: None}
    tuner = tune.Tuner(
        tune.with_resources(_probed, {"cpu": 1}),
        param_space={**config, PROBE_KEY: str(probe)},
        tune_config=tune.TuneConfig(num_samples=1, trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=ledger.session_name(0),
            storage_path=str(storage),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
            **run_kwargs,
        ),
    )
    results = tuner.fit()
    records = [json.loads(line) for line in (probe / "probe.jsonl").read_text().splitlines()]
    return results, records


def _staged_leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name == ".staging" or p.name.startswith("epoch_")]


@pytest.fixture(scope="module", params=["path", "uri"])
def full_run(request, tmp_path_factory, ray_session):
    """One trial of two epochs, run to its end by Tune on the session's Ray; storage a local path or a URI (Ray then
    uploads each checkpoint from the local stage)."""
    base = tmp_path_factory.mktemp("full")
    storage = base / "sweep"
    results, records = _fit(storage if request.param == "path" else f"file://{storage}", base / "probe")
    return storage, request.param, results, records


def test_the_experiment_state_sync_never_sees_a_checkpoint_being_staged(full_run, ray_session):
    _, _, results, records = full_run
    assert results.num_errors == 0, results.errors
    assert [r["epoch"] for r in records] == [1, 2]
    session_dir = ray_session._private.worker._global_node.get_session_dir_path()
    for r in records:
        source, stage = Path(r["sync_source"]), Path(r["stage"])
        # The sync walks Ray's driver staging folder of this experiment, on this (the driver's) node, and
        # get_trial_dir() is inside it: the very place the old code staged in.
        assert source.is_relative_to(session_dir)
        assert Path(r["trial_dir"]) == Path(r["trial_driver_staging_path"])
        assert Path(r["trial_dir"]).is_relative_to(source)
        # The stage was complete when the sync ran, and nothing of it was copied.
        assert r["stage_files"] == sorted([STATE_FILE, HISTORY_FILE])
        assert r["copied_checkpoint_files"] == [], r["copied_checkpoint_files"]
        # It is on the worker's local disk, outside every folder Ray syncs or the sweep reads.
        assert stage.is_relative_to(tune_entry.staging_root())
        for synced in (source, r["trial_working_directory"], r["experiment_dir"], session_dir):
            assert not stage.is_relative_to(synced), (stage, synced)


def test_a_finished_trial_leaves_no_stage_anywhere_and_complete_checkpoints(full_run):
    storage, kind, results, records = full_run
    assert results.num_errors == 0, results.errors
    for r in records:
        assert not Path(r["stage"]).exists()
        assert not Path(r["stage"]).parent.exists()  # the worker process's folder went with it
    assert _staged_leftovers(storage) == []
    assert _staged_leftovers(Path(records[0]["sync_source"])) == []
    # The sweep reads the checkpoints back as before: the newest, with the whole history, from session-0/0000_hard.
    saved = ledger.newest_checkpoints(str(storage) if kind == "path" else f"file://{storage}")
    assert list(saved) == [0] and saved[0].epoch == 2 and saved[0].session == 0
    assert saved[0].path.rsplit("/", 2)[1] == "0000_hard"
    with tune_entry.tune.Checkpoint(saved[0].path).as_directory() as d:  # as a resume reads it (sweep_resume)
        state, history = tune_entry.load_checkpoint(d)
    assert state["epoch"] == 2 and [h["epoch"] for h in history] == [1, 2]
    with results[0].checkpoint.as_directory() as d:
        assert tune_entry.load_checkpoint(d)[0]["epoch"] == 2


def test_a_trial_stopped_inside_report_leaves_no_stage_once_the_next_trial_starts(tmp_path, ray_session):
    """Tune stops a trial while it waits in tune.report (a scheduler's stop): its last stage is removed by the
    trial's own cleanup, or else, its worker gone, by the next trial to start on the host."""
    results, records = _fit(tmp_path / "sweep", tmp_path / "probe", stop={"training_iteration": 1})
    assert results.num_errors == 0, results.errors
    assert [r["epoch"] for r in records] == [1]
    assert _staged_leftovers(tmp_path / "sweep") == []
    stage = Path(records[0]["stage"])
    if stage.exists():  # Ray ended the worker before its thread got to clean up
        tune_entry.remove_stale_stages()
    assert not stage.exists()


# --- without Ray -------------------------------------------------------------------------------------------------


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_stages_live_in_a_private_folder_of_the_temp_folder_per_host_process_and_trial(temp_root):
    stage = tune_entry.open_stage("abc_00001")
    root = tune_entry.staging_root()
    assert stage == root / str(os.getpid()) / "abc_00001" and stage.is_dir() and not any(stage.iterdir())
    assert root.parent == temp_root / f"{tune_entry.STAGING_PREFIX}-{os.getuid()}"
    assert (os.stat(root.parent).st_mode & 0o777) == 0o700
    (stage / "epoch_00001").mkdir()
    tune_entry.close_stage(stage)
    assert not stage.parent.exists() and root.is_dir()


def test_the_next_start_removes_what_dead_workers_and_this_process_left_and_keeps_live_ones(temp_root):
    root = tune_entry.staging_root()
    dead, live, mine = (root / str(pid) / "t" / "epoch_00003" for pid in (_dead_pid(), os.getppid(), os.getpid()))
    for d in (dead, live, mine):
        d.mkdir(parents=True)
        (d / STATE_FILE).write_bytes(b"half")
    (root / "not-a-pid").mkdir()
    stage = tune_entry.open_stage("u_00000")
    assert not dead.parents[1].exists() and not mine.exists()
    assert live.exists() and (root / "not-a-pid").exists()
    assert stage.is_dir() and not any(stage.iterdir())


def test_a_staging_folder_someone_else_made_is_refused(temp_root):
    (temp_root / "elsewhere").mkdir()
    (temp_root / f"{tune_entry.STAGING_PREFIX}-{os.getuid()}").symlink_to(temp_root / "elsewhere")
    with pytest.raises(RuntimeError, match="not a folder of this user's"):
        tune_entry.staging_root()
