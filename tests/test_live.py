"""The sweep's live view and the words that name how a trial ended (no Ray started)."""

import io
import json
from types import SimpleNamespace

import pytest

from mmi_ray.layout import TRIAL_ENDS_FILE, read_trial_ends, write_trial_ends
from mmi_ray.results.records import _trial_status
from mmi_ray.sweep.live import SweepProgress


def _trial(tid, **config):
    return SimpleNamespace(trial_id=tid, config=config)


def test_live_view_counts_best_at_full_budget_interval_and_time_left(tmp_path, capsys, monkeypatch):
    from mmi_ray.sweep.live import configure

    configure(None)  # the view the callback was made with (no invocation chose one)
    clock = [1000.0]
    monkeypatch.setattr("mmi_ray.sweep.live.time.time", lambda: clock[0])
    p = SweepProgress(str(tmp_path), "sweep 'demo'", 4, 100, [0, 1, 2], "val_accuracy", "max", heartbeat_s=1e9)
    p.setup()
    a, b, c = _trial("a", **{"loss.mi_weight": 0.1}), _trial("b", **{"loss.mi_weight": 0.9}), _trial("c")
    for t in (a, b):
        p.on_trial_start(0, [], t)
    clock[0] += 30
    # a higher value at a smaller budget is never "best": only full-budget results count
    p.on_trial_result(0, [], b, {"step": 50, "val_accuracy": 0.9})
    p.on_trial_result(0, [], a, {"step": 100, "val_accuracy": 0.6, "val_accuracy_seed0": 0.5,
                                 "val_accuracy_seed1": 0.6, "val_accuracy_seed2": 0.7})
    p.on_trial_complete(0, [], a)
    p.on_trial_complete(0, [], b)  # ended short of its budget: the scheduler stopped it
    p.on_trial_start(0, [], c)
    p.on_trial_error(0, [], c)
    assert p.counts() == {"done": 1, "running": 0, "stopped early": 1, "failed": 1}
    assert read_trial_ends(tmp_path) == {"a": "completed", "b": "stopped early",
                                                                      "c": "error"}
    line = p.line()
    assert line.startswith("[mmi-ray] sweep 'demo': 1/4 done, 0 running, 1 stopped early, 1 failed")
    # mean 0.6 of (0.5, 0.6, 0.7): s = 0.1, t(0.975, 2) = 4.303, half-width 0.2484
    assert "best val_accuracy 0.6000 [0.3516, 0.8484] (95% t, n=3 seeds) trial a (mi_weight=0.1)" in line
    # 3 of 4 trials' budgets spent in 30 s: about 10 s left
    assert "0m30s elapsed, ~0m10s left (estimate)" in line
    # one seed: a Wilson interval over the validation questions (45 of 60: [0.6277, 0.8422] by hand)
    p.on_trial_result(0, [], _trial("d", **{"loss.mi_weight": 0.3}), {"step": 100, "val_accuracy": 0.75, "val_n": 60})
    assert "best val_accuracy 0.7500 [0.6277, 0.8422] (95% Wilson, n=60 questions, 1 seed) trial d" in p.line()
    out = capsys.readouterr().out  # not a terminal: plain lines, printed when something changed
    assert "\r" not in out and out.count("\n") >= 3 and "1/4 done" in out
    assert p.unfinished() == 1


def test_live_view_redraws_one_line_on_a_terminal(tmp_path, monkeypatch):
    tty = io.StringIO()
    tty.isatty = lambda: True
    monkeypatch.setattr("sys.stdout", tty)
    p = SweepProgress(str(tmp_path), "confirmation", 2, 10, [], None)
    p.on_trial_start(0, [], _trial("a"))
    p.on_trial_result(0, [], _trial("a"), {"step": 10, "val_accuracy": 0.5})
    p.on_trial_complete(0, [], _trial("a"))
    p.on_experiment_end([])
    text = tty.getvalue()
    assert text.count("\r\x1b[K") >= 2 and text.endswith("\n") and "best" not in text  # nothing is chosen here
    assert "confirmation: 1/2 done" in text.split("\r\x1b[K")[-1]


def test_quiet_view_prints_nothing_but_still_records_how_trials_ended(tmp_path, capsys):
    p = SweepProgress(str(tmp_path), "x", 1, 10, [0], "val_accuracy", show=False)
    p.on_trial_result(0, [], _trial("a"), {"step": 10, "val_accuracy": 0.5})
    p.on_trial_complete(0, [], _trial("a"))
    assert capsys.readouterr().out == ""
    assert read_trial_ends(tmp_path) == {"a": "completed"}


@pytest.mark.parametrize("last, finished, ended, known, status", [
    (100, True, "completed", True, "completed"),
    (40, True, "stopped early", True, "stopped early"),  # the scheduler stopped it
    (40, True, None, True, "interrupted"),                # Ctrl-C or the time budget: resumable
    (40, True, None, False, "stopped early"),             # a sweep from before the trial-ends record
    (40, False, None, True, "running"),
    (0, True, None, True, "not run"),
    (40, True, "error", True, "error"),
])
def test_trial_status_words_match_what_happened(last, finished, ended, known, status):
    assert _trial_status(None, last, 100, finished, ended, known) == status


def test_an_error_file_left_by_an_earlier_attempt_does_not_outlive_a_later_end(tmp_path):
    """Tune leaves ``error.txt`` in a trial folder when the trial fails, and there it stays after a
    retry within the sweep or ``--resume`` runs the trial to its end: the newest recorded end wins."""
    (tmp_path / "error.txt").write_text("OSError: When writing to s3://b/x: connection refused\n")
    assert _trial_status(tmp_path, 100, 100, True, "completed", True) == "completed"
    assert _trial_status(tmp_path, 40, 100, True, "stopped early", True) == "stopped early"
    assert _trial_status(tmp_path, 40, 100, True, "error", True) == "error"
    assert _trial_status(tmp_path, 40, 100, True, None, True) == "error"  # no end recorded after it
    assert _trial_status(tmp_path, 100, 100, True, None, False) == "error"  # a sweep from before the record


def test_a_resumed_sweep_keeps_earlier_ends_and_this_invocations_view(tmp_path, capsys):
    """On --resume Tune runs the callback it pickled with the experiment: its ends come from the
    file (the earlier invocation's too) and whether it shows anything from this invocation."""
    import pickle

    from mmi_ray.sweep.live import configure

    first = SweepProgress(str(tmp_path), "x", 3, 10, [0], "val_accuracy", show=False)
    restored = pickle.loads(pickle.dumps(first))  # what tuner.pkl holds, before any trial ended
    first.on_trial_complete(0, [], _trial("a"))  # ended in the first invocation (no result: stopped)
    configure(show=True)
    try:
        restored.setup()
        restored.on_trial_result(0, [], _trial("b"), {"step": 10, "val_accuracy": 0.5})
        restored.on_trial_complete(0, [], _trial("b"))
    finally:
        configure(None)
    assert read_trial_ends(tmp_path) == {"a": "stopped early", "b": "completed"}
    assert "x: 1/3 done, 0 running, 1 stopped early" in capsys.readouterr().out


def test_trial_ends_survive_a_restored_experiment_and_old_records_are_read(tmp_path):
    """Tune copies a restored experiment's top-level ``*.json`` files aside and syncs the copies back
    over the originals while it runs: the record is JSON lines in a ``.jsonl`` file, which it leaves
    alone. A sweep from before the change (``ended_trials.json``) is still read; a damaged line is
    named and skipped."""
    assert read_trial_ends(tmp_path) is None  # no record: a sweep from before any
    (tmp_path / "ended_trials.json").write_text(json.dumps({"a": "completed", "b": "stopped early"}))
    assert read_trial_ends(tmp_path) == {"a": "completed", "b": "stopped early"}
    write_trial_ends(tmp_path, {"b": "completed"})
    write_trial_ends(tmp_path, {"b": "completed", "c": "error"}, new="c")  # appended: one line
    assert (tmp_path / "ended_trials.jsonl").read_text().count("\n") == 2
    assert not TRIAL_ENDS_FILE.endswith((".json", ".pkl"))
    with open(tmp_path / "ended_trials.jsonl", "a") as f:
        f.write('{"trial_id": "d", "en')  # cut short by a kill
    skipped = []
    assert read_trial_ends(tmp_path, skipped) == {"a": "completed", "b": "completed", "c": "error"}
    assert skipped == [f"{tmp_path / 'ended_trials.jsonl'}: line 3: damaged, ignored"]
