"""The study in object storage: Optuna's journal as one object per append (sweep.journal). ``file://`` URIs take the
same code path as ``s3://`` here; the S3 server test (test_cluster.py) runs it against an S3 API."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from sweep import journal, ledger


def _uri(tmp_path) -> str:
    return f"file://{tmp_path}/sweeps/x"


def _fill(exp: str, n: int) -> optuna.Study:
    study = ledger.create_study(exp, "x", "max")
    for i in range(n):
        t = study.ask()
        t.report(0.1 * i, 1)
        study.tell(t, 0.5 + i)
    return study


def _reader(exp: str) -> optuna.Study:
    return optuna.load_study(storage=ledger.study_storage(exp), study_name=None)


def test_a_reader_sees_every_trial_the_writer_told(tmp_path):
    exp = _uri(tmp_path)
    _fill(exp, 3)
    again = _reader(exp)
    assert [t.value for t in again.trials] == [0.5, 1.5, 2.5]
    assert again.trials[2].intermediate_values == {1: pytest.approx(0.2)}
    assert ledger.has_study(exp) and not ledger.has_study(_uri(tmp_path / "none"))
    objects = sorted(p.name for p in (tmp_path / "sweeps/x" / journal.JOURNAL_DIR).iterdir())
    assert objects[0] == "000000000000.json" and len(objects) > 3  # one object per append, named by log number


def test_the_writer_continues_a_journal_and_a_reader_follows(tmp_path):
    exp = _uri(tmp_path)
    _fill(exp, 2)
    reader = _reader(exp)
    writer = optuna.load_study(storage=ledger.study_storage(exp, writer=True), study_name=None)
    t = writer.ask()
    assert t.number == 2  # numbers go on; nothing is handed out twice
    writer.tell(t, 9.0)
    assert [x.state for x in reader.trials] == [TrialState.COMPLETE] * 3 and reader.trials[2].value == 9.0


def test_a_long_journal_is_compacted_and_read_back_the_same(tmp_path, monkeypatch):
    exp = _uri(tmp_path)
    _fill(exp, 4)
    monkeypatch.setattr(journal, "COMPACT_AFTER", 5)
    assert len(optuna.load_study(storage=ledger.study_storage(exp, writer=True), study_name=None).trials) == 4
    folder = tmp_path / "sweeps/x" / journal.JOURNAL_DIR
    compacted = [p.name for p in folder.iterdir() if p.name.startswith("c")]
    assert len(compacted) == 1
    for p in folder.iterdir():  # a reader needs nothing but the compacted copy and what came after it
        if not p.name.startswith("c"):
            p.unlink()
    assert [t.value for t in _reader(exp).trials] == [0.5, 1.5, 2.5, 3.5]


def test_a_missing_object_is_named_not_skipped(tmp_path):
    exp = _uri(tmp_path)
    _fill(exp, 2)
    (tmp_path / "sweeps/x" / journal.JOURNAL_DIR / "000000000001.json").unlink()
    with pytest.raises(ValueError, match="entries 1..1 are missing; restore the sweep's storage"):
        _reader(exp)
