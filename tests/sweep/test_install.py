"""The locked install: one lock that pins the torch family as pyproject does, and a check that names what won't load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the lock itself also serves 3.10
ROOT = Path(__file__).resolve().parents[2]
TORCH_FAMILY = ("torch", "torchvision", "torchaudio")


def _locked() -> dict[str, set[str]]:
    pins: dict[str, set[str]] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        found = re.match(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", line)
        if found:
            pins.setdefault(found.group(1).lower(), set()).add(found.group(2))
    return pins


def test_the_lock_pins_every_dependency_with_hashes_and_the_torch_family_as_pyproject_does():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^]]*\])?(.*)$", d).groups() for d in project["dependencies"])
    locked = _locked()
    for name in TORCH_FAMILY:  # exact pins, built for each other, the same in both files
        assert wanted[name].startswith("=="), f"{name} must be pinned exactly in pyproject.toml"
        assert locked[name] == {wanted[name][2:]}, f"{name}: lock {locked[name]} vs pyproject {wanted[name]}"
    missing = [n for n in wanted if n.lower() not in locked]
    assert not missing, f"not in requirements.lock: {missing}; run `make lock`"
    text = (ROOT / "requirements.lock").read_text()
    assert text.count("==") <= text.count("--hash=sha256:"), "every pin carries its hashes"


def test_the_install_check_loads_every_native_library():
    from sweep.install_check import CHECKS, main

    assert set(CHECKS) >= {"torch", "torchvision", "torchaudio", "soundfile", "pyarrow"}
    assert main() == 0


def test_a_library_that_does_not_load_is_named_in_one_line(monkeypatch, capsys):
    from sweep import install_check

    def broken() -> None:
        raise OSError("libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace")

    monkeypatch.setitem(install_check.CHECKS, "torchaudio", broken)
    assert install_check.main() == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["install check: torchaudio does not load (libtorchaudio.so: undefined symbol: "
                     "torch_exception_get_what_without_backtrace); reinstall the locked environment with "
                     "`make clean setup`"]


@pytest.mark.parametrize("name", ["Makefile", ".ci/run"])
def test_setup_installs_the_lock_and_ci_sets_up_from_an_empty_cache(name):
    text = (ROOT / name).read_text()
    if name == "Makefile":
        assert "uv pip sync" in text and "--require-hashes" in text and "requirements.lock" in text
        assert "sweep.install_check" in text
    else:
        assert "UV_CACHE_DIR" in text and "make setup" in text and "make test" in text
        assert "Lock::Timeout" in text
