"""cluster.yaml passes the checks `ray up` runs before it touches a cloud, and keeps its security properties.

`ray up` (ray/autoscaler/_private/commands.py, `_bootstrap_config`) calls `prepare_config` (the provider's
defaults merged in, setup commands merged, per-node-type worker limits filled) and then `validate_config`
(ray-schema.json through jsonschema, plus the node-type checks). Between the two it asks AWS for instance types,
and after them it creates IAM roles and security groups: those need boto3 and the network and are not run here.
Nothing here starts Ray or writes outside tmp_path.
"""

from __future__ import annotations

import copy
import re
from importlib.metadata import version
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"
BEGIN = "# --- on-premises variant (begin) ---"
END = "# --- on-premises variant (end) ---"


@pytest.fixture(autouse=True)
def _scratch_home(tmp_path, monkeypatch):
    """prepare/validate write nothing today; a HOME in tmp_path keeps it so if a Ray upgrade starts caching."""
    monkeypatch.setenv("HOME", str(tmp_path))


def _text() -> str:
    return CLUSTER_YAML.read_text()


def _onprem_text() -> str:
    """The commented-out on-premises variant, uncommented the way its comment tells a user to."""
    lines = _text().splitlines()
    assert lines.count(BEGIN) == 1 and lines.count(END) == 1, "the on-prem block's markers are missing or doubled"
    block = lines[lines.index(BEGIN) + 1 : lines.index(END)]
    assert block and all(line.startswith("# ") or line == "#" for line in block), "every on-prem line starts '# '"
    return "\n".join(line[2:] for line in block)


def _configs() -> dict[str, dict]:
    return {"aws": yaml.safe_load(_text()), "onprem": yaml.safe_load(_onprem_text())}


def _ray_up_checks(config: dict) -> dict:
    """What `ray up` does to the file before any provider call; raises on what it would refuse."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _start_commands(config: dict) -> list[str]:
    return config["head_start_ray_commands"] + config["worker_start_ray_commands"]


# --- Ray's own validation -----------------------------------------------------------------------------------------


def test_aws_config_passes_ray_up_validation():
    """The AWS file as `ray up` would read it, through Ray's prepare + validate."""
    prepared = _ray_up_checks(yaml.safe_load(_text()))
    assert prepared["provider"]["type"] == "aws"
    assert set(prepared["available_node_types"]) == {"head", "gpu_worker"}
    assert prepared["available_node_types"]["head"]["max_workers"] == 0


def test_onprem_variant_passes_ray_up_validation():
    """The commented-out on-prem variant is a valid file once uncommented, not just a sketch."""
    prepared = _ray_up_checks(yaml.safe_load(_onprem_text()))
    assert prepared["provider"]["type"] == "local"
    (node_type,) = prepared["available_node_types"].values()  # prepare_local makes one node type of the ips
    assert node_type["min_workers"] == node_type["max_workers"] == len(prepared["provider"]["worker_ips"])
    assert prepared["auth"]["ssh_private_key"], "on-prem needs passwordless SSH: a key, no password"


def test_validation_rejects_a_misspelt_key():
    """Guards the two tests above against passing vacuously: the schema does refuse unknown keys."""
    config = yaml.safe_load(_text())
    config["idle_timeout_minute"] = config.pop("idle_timeout_minutes")
    with pytest.raises(jsonschema.ValidationError, match="idle_timeout_minute"):
        _ray_up_checks(config)


# --- what the file promises -------------------------------------------------------------------------------------


def test_head_runs_no_trials():
    """CPU 0 on the head: the driver and autoscaler get the whole node, every trial goes to a GPU worker."""
    head = yaml.safe_load(_text())["available_node_types"]["head"]
    assert head["resources"] == {"CPU": 0}


def test_gpu_workers_scale_from_zero_on_spot():
    """No GPU is billed while nothing waits, and the autoscaler knows a worker brings a GPU before one exists."""
    worker = yaml.safe_load(_text())["available_node_types"]["gpu_worker"]
    assert worker["min_workers"] == 0
    assert worker["resources"].get("GPU", 0) >= 1
    assert worker["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"


def test_no_aws_secrets_in_the_file():
    """Credentials come from instance profiles; a key in a committed file leaks, comments and on-prem block included."""
    text = _text()
    for name in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
        assert name not in text.lower()
    assert "AKIA" not in text
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text)
    for config in _configs().values():
        assert "aws_credentials" not in config["provider"]  # Ray's provider-level credentials field


def test_no_ray_port_opened_to_the_internet():
    """Extra inbound rules are how 6379/8265/10001 get exposed; the launcher's default group allows only SSH."""
    provider = yaml.safe_load(_text())["provider"]
    assert not provider.get("security_group", {}).get("IpPermissions")


@pytest.mark.parametrize("variant", ["aws", "onprem"])
def test_dashboard_on_loopback(variant):
    """The dashboard runs jobs for whoever reaches it: bound to 127.0.0.1, reached through an SSH tunnel."""
    config = _configs()[variant]
    (head_start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start.split()
    assert not any("0.0.0.0" in c for c in _start_commands(config))


@pytest.mark.parametrize("variant", ["aws", "onprem"])
def test_token_auth_on_every_ray_start(variant):
    """Ray 2.60 takes the auth mode from the environment only, and nodes that disagree cannot join."""
    config = _configs()[variant]
    starts = [c for c in _start_commands(config) if "ray start" in c]
    assert len(starts) == 2
    for command in starts:
        assert command.index("export RAY_AUTH_MODE=token;") < command.index("ray start")
    assert "~/.ray/auth_token" in config["file_mounts"]  # where `ray start` looks for the token


@pytest.mark.parametrize("variant", ["aws", "onprem"])
def test_nodes_install_pinned_versions(variant):
    """Every node must run the Ray that runs `ray up` and the same commit of this project."""
    setup = " ".join(_configs()[variant]["setup_commands"])
    assert f'"ray[default,tune]=={version("ray")}"' in setup
    ref = re.search(r"contrastive-sweeps @ git\+https://\S+?@([\w.\-]+)\"", setup)
    assert ref, "the project is installed from git at a tag or commit"
    assert ref.group(1) not in {"main", "master", "HEAD"}, "a branch moves: pin a tag or commit sha"
