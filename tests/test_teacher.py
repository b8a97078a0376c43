"""Teacher rationales for your own rows: the answer parsers (fuzzed), prompt templates, and the
``openai`` backend against a real HTTP server on 127.0.0.1 (canned replies, 429, 500, slow, malformed,
401, an unknown model, an unreachable port): retries, the rate limit and resume, nothing lost."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmi_ray.cli import main
from mmi_ray.commands.data import data_config
from mmi_ray.teacher.backends import OpenAIBackend, Sampling
from mmi_ray.teacher.parse import DEFAULT_MARKER, parse_reply
from mmi_ray.teacher.prompts import load_prompt, shipped
from mmi_ray.teacher.run import generate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))
from teacher_server import MODEL, TeacherServer  # noqa: E402

# --- parsers


@pytest.mark.parametrize("text,kind,extra,want", [
    ("The answer must be a place. Of the above choices, only wooded areas have supplies. So the answer is (c) wooded area.\n\nQ: next",
     "choice", {"choices": ["british columbia", "body of water", "wooded area", "pay debts", "zoo"]},
     ("The answer must be a place. Of the above choices, only wooded areas have supplies.", "wooded area")),
    ("They put 10 seeds in each bed. There are 45 beds. The answer is (10 * 45).", "number", {"marker": "The answer is"},
     ("They put 10 seeds in each bed. There are 45 beds.", "450")),
    ("Oxford Street is not in Europe. So the answer is contradiction.\n\nPremise: x", "class",
     {"classes": ["entailment", "neutral", "contradiction"]}, ("Oxford Street is not in Europe.", "contradiction")),
    ("32 + 42 = 74 and 74 - 35 = 39. So the answer is $1,039.", "number", {}, ("32 + 42 = 74 and 74 - 35 = 39.", "1039")),
    ("red, big. So the answer is red.", "text", {}, ("red, big.", "red")),
    ("No marker at all.", "text", {}, ("", "")),
    ("So the answer is red.", "text", {}, ("", "")),  # no rationale: not a chain of thought
    ("It is (f). So the answer is (f).", "choice", {"choices": ["a", "b"]}, ("", "")),  # no such option
    ("Both. So the answer is neutral or contradiction.", "class", {"classes": ["neutral", "contradiction"]}, ("", "")),
])
def test_each_label_kind_parses_the_dss_style_and_refuses_what_it_cannot_read(text, kind, extra, want):
    p = parse_reply(text, kind, **extra)
    assert (p.rationale, p.answer) == want


CLASSES = ["entailment", "neutral", "contradiction"]
CHOICES = ["wooded area", "zoo", "body of water"]


@settings(max_examples=300, deadline=None)
@given(st.text(), st.sampled_from(["text", "choice", "number", "class"]))
def test_the_parser_never_raises_and_answers_only_within_the_kind(text, kind):
    p = parse_reply(text, kind, choices=CHOICES, classes=CLASSES)
    assert isinstance(p.rationale, str) and isinstance(p.answer, str)
    assert p.ok == bool(p.answer)
    if kind == "class" and p.ok:
        assert p.answer in CLASSES
    if kind == "choice" and p.ok:
        assert p.answer in CHOICES
    if kind == "number" and p.ok:
        float(p.answer)


words = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(words.filter(lambda s: DEFAULT_MARKER not in s and s.strip()), st.sampled_from(CLASSES),
       st.sampled_from(["", ".", "\n\nPremise: more text"]))
def test_a_well_formed_class_reply_round_trips(rationale, label, tail):
    p = parse_reply(f"{rationale} {DEFAULT_MARKER} {label}{tail}", "class", classes=CLASSES)
    assert p.answer == label and p.rationale == rationale.strip()


@settings(max_examples=200, deadline=None)
@given(st.integers(-10**9, 10**9), st.sampled_from(["", ".", " apples.", "\n\nQ: x"]))
def test_a_well_formed_number_reply_round_trips(n, tail):
    assert parse_reply(f"Count them. {DEFAULT_MARKER} {n}{tail}", "number").answer == str(n)


# --- prompts


def test_every_shipped_prompt_loads_and_fills_from_a_row():
    assert {"text", "choice", "number", "class", "cqa", "svamp", "anli1", "esnli"} <= set(shipped())
    for name in shipped():
        p = load_prompt(name)
        assert p.kind in ("text", "choice", "number", "class") and p.marker
        row = {"input": "Q?", "premise": "P.", "hypothesis": "H.", "classes": "a, b", "choices": "(a) x"}
        text = p.render(row, "row 1")
        assert ("Q?" in text) or ("P." in text and "H." in text)
        assert p.marker in text  # the exemplars show the marker the parser looks for


@pytest.mark.parametrize("body,problem", [
    ("no placeholder here", "no {input}"),
    ("---\nkind: essay\n---\nQ: {input}", "kind: must be one of"),
    ("---\ncolour: red\n---\nQ: {input}", "colour: unknown key"),
    ("---\nkind: text\nQ: {input}", "not closed"),
])
def test_a_bad_prompt_file_is_one_line_naming_it(tmp_path, body, problem, capsys):
    f = tmp_path / "mine.txt"
    f.write_text(body)
    rc = main(["rationales", str(REPO / "examples/boxes.csv"), "custom.columns.input=question",
               "custom.columns.label=answer", "--teacher", "t", "--prompt", str(f), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and str(f) in err and problem in err
    assert not (tmp_path / "o").exists()


def test_a_prompt_that_names_a_missing_column_names_the_row(tmp_path, capsys):
    f = tmp_path / "p.txt"
    f.write_text("Q: {question} ({topic})\nA:")
    rc = main(["rationales", str(REPO / "examples/boxes.csv"), "custom.columns.input=question",
               "custom.columns.label=answer", "--teacher", "t", "--prompt", str(f), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "boxes.csv: line 2" in err and "'topic'" in err


# --- the openai backend against a local server


def small_csv(tmp_path: Path, n: int = 12) -> Path:
    """The first rows of the box questions, two splits."""
    lines = (REPO / "examples/boxes.csv").read_text().splitlines()
    header, train = lines[0], lines[1:1 + n]
    valid = [x for x in lines if x.endswith(",valid")][:4]
    f = tmp_path / "rows.csv"
    f.write_text("\n".join([header, *train, *valid]) + "\n")
    return f


COLUMNS = ["custom.columns.input=question", "custom.columns.label=answer"]


def run_cli(tmp_path, csv, url, *extra, out="out"):
    return main(["rationales", str(csv), *COLUMNS, "--teacher", MODEL, "--base-url", url, "--out",
                 str(tmp_path / out), "--concurrency", "4", *extra])


def read_out(folder: Path, split: str) -> list[dict]:
    return [json.loads(x) for x in (folder / f"{split}.jsonl").read_text().splitlines()]


@pytest.fixture
def server():
    s = TeacherServer().start()
    yield s
    s.stop()


def test_rationales_from_a_csv_write_what_the_loader_reads_with_teacher_accuracy(tmp_path, server, capsys):
    csv = small_csv(tmp_path)
    assert run_cli(tmp_path, csv, server.url) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "train 12 12 100.0% [75.8, 100.0]" in out and "valid 4 4 100.0% [51.0, 100.0]" in out
    rows = read_out(tmp_path / "out", "train")
    assert [r["id"] for r in rows] == [f"train-{i}" for i in range(12)]  # the input's order
    assert all(r["parsed"] and r["rationale"] and r["teacher_answer"] == r["label"] for r in rows)
    meta = json.loads((tmp_path / "out/rationales.json").read_text())
    assert meta["complete"] and meta["teacher"]["model"] == MODEL and meta["prompt"]["name"] == "text"
    tokens = {k: meta["splits"]["train"].pop(k) for k in ("tokens_in", "tokens_out")}
    assert meta["splits"]["train"] == {"rows": 12, "parsed": 12, "teacher_correct": 12, "teacher_accuracy": 1.0}
    # what the teacher cost: the server's own count of every reply's tokens, summed over the splits
    logged = [sum(u[i] for u in server.usage) for i in (0, 1)]
    assert [tokens["tokens_in"] + meta["splits"]["valid"]["tokens_in"],
            tokens["tokens_out"] + meta["splits"]["valid"]["tokens_out"]] == logged and logged[0] > 100
    assert "api_key" not in json.dumps(meta).lower()
    # the folder is a custom dataset: the trainer's loader reads it (validation carved from train: never test)
    from mmi_ray.data import load_splits

    splits = load_splits(data_config(str(tmp_path / "out"), []))
    assert len(splits.train) == 12 and len(splits.valid) == 4 and splits.test is None
    assert all(e.parsed and e.teacher_label == e.label for e in splits.train.examples)
    # greedy: one request per distinct prompt, and none on a rerun
    asked = len(server.requests)
    assert asked == len({p for _, p in server.requests})
    assert run_cli(tmp_path, csv, server.url) == 0
    assert len(server.requests) == asked
    assert "0 rows answered with 0 requests (0 on the wire" in capsys.readouterr().out


def test_429_500_slow_and_malformed_replies_are_retried_and_nothing_is_lost(tmp_path, capsys):
    s = TeacherServer(faults=["ok", "429", "500", "slow:3", "malformed", "429", "500"]).start()
    try:
        rc = run_cli(tmp_path, small_csv(tmp_path), s.url, "--timeout", "1", "--retries", "3")
    finally:
        s.stop()
    assert rc == 0, capsys.readouterr().err
    rows = read_out(tmp_path / "out", "train") + read_out(tmp_path / "out", "valid")
    assert len(rows) == 16 and all(r["parsed"] for r in rows)
    distinct = len({p for _, p in s.requests})
    assert len(s.requests) >= distinct + 6  # every fault cost one more request
    # the requests the server saw, the client's own retries (429, 500, the timeout) included, are counted
    m = re.search(r"with (\d+) requests \((\d+) on the wire", capsys.readouterr().out)
    assert m and int(m.group(2)) == len(s.requests) > int(m.group(1)), (m and m.groups(), len(s.requests))


def test_the_rate_limit_spaces_the_requests(tmp_path):
    s = TeacherServer().start()
    try:
        assert run_cli(tmp_path, small_csv(tmp_path), s.url, "--rate-limit", "20", "--concurrency", "8") == 0
    finally:
        s.stop()
    times = sorted(t for t, _ in s.requests)
    assert len(times) >= 10
    # 20 per second: starts 50 ms apart, even with 8 in flight. The server sees them with the jitter of a
    # busy machine (one gap of 33 ms was seen beside the other test lane), so every run of 5 requests
    # must span at least 4 intervals less 50 ms, and the whole run its intervals less 50 ms; without the
    # limit, 8 in flight arrive within a few ms of each other
    spans = [b - a for a, b in zip(times, times[4:])]
    assert min(spans) > 4 * 0.05 - 0.05, spans
    assert times[-1] - times[0] > (len(times) - 1) * 0.05 - 0.05, times


def test_a_run_cut_off_by_the_server_resumes_asking_only_the_rows_not_written(tmp_path, capsys):
    csv = small_csv(tmp_path)
    s = TeacherServer(faults=["ok"] * 6 + ["401"] * 50).start()  # the key is revoked after 6 replies
    try:
        rc = run_cli(tmp_path, csv, s.url, "--concurrency", "1")
    finally:
        s.stop()
    err = capsys.readouterr().err
    assert rc == 2 and "refused the key (HTTP 401)" in err and "OPENAI_API_KEY" in err
    partial = tmp_path / "out/train.jsonl.partial"
    written = [json.loads(x)["id"] for x in partial.read_text().splitlines()]
    assert len(written) == 6 and not (tmp_path / "out/train.jsonl").exists()
    # a run on an unfinished folder is refused by the loader, with what to do
    rc = main(["data", str(tmp_path / "out")])
    assert rc == 2 and "not complete" in capsys.readouterr().err
    s = TeacherServer().start()
    try:
        assert run_cli(tmp_path, csv, s.url, "--concurrency", "1") == 0
    finally:
        s.stop()
    assert len(s.requests) == 16 - 6  # the 6 written rows were not asked again
    assert [r["id"] for r in read_out(tmp_path / "out", "train")] == [f"train-{i}" for i in range(12)]
    assert not partial.exists()


def rationales_cmd(csv: Path, url: str, out: Path, concurrency: int) -> list[str]:
    """The CLI in a process of its own (to be killed or interrupted)."""
    return [sys.executable, "-m", "mmi_ray.cli", "rationales", str(csv), *COLUMNS, "--teacher", MODEL,
            "--base-url", url, "--out", str(out), "--concurrency", str(concurrency)]


def started_until(cmd: list[str], partial: Path, rows: int, **popen) -> subprocess.Popen:
    """``cmd`` started, returned once ``partial`` holds ``rows`` rows (or after a minute)."""
    p = subprocess.Popen(cmd, cwd=REPO, **popen)
    deadline = time.time() + 60
    while time.time() < deadline and (not partial.exists() or len(partial.read_text().splitlines()) < rows):
        time.sleep(0.05)
    return p


def test_a_killed_run_loses_at_most_the_rows_in_flight_and_resumes(tmp_path):
    """SIGKILL mid-run (no cleanup at all), then the same command: every row once, in order."""
    csv = small_csv(tmp_path, 40)
    s = TeacherServer(faults=["ok"] * 8 + ["slow:0.3"] * 100).start()
    cmd, partial = rationales_cmd(csv, s.url, tmp_path / "out", 2), tmp_path / "out/train.jsonl.partial"
    try:
        p = started_until(cmd, partial, 12, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        kept = len(partial.read_text().splitlines())
        assert 12 <= kept < 40
        before = len(s.requests)
        s.faults.clear()
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        s.stop()
    assert r.returncode == 0, r.stderr
    rows = read_out(tmp_path / "out", "train")
    assert [x["id"] for x in rows] == [f"train-{i}" for i in range(40)]
    distinct_left = 44 - kept  # rows not written; a greedy teacher is asked once per distinct prompt
    assert len(s.requests) - before <= distinct_left


def test_ctrl_c_keeps_the_rows_written_and_says_the_folder_is_not_complete(tmp_path):
    csv = small_csv(tmp_path, 40)
    s = TeacherServer(faults=["ok"] * 4 + ["slow:0.5"] * 100).start()
    cmd, partial = rationales_cmd(csv, s.url, tmp_path / "out", 1), tmp_path / "out/train.jsonl.partial"
    try:
        p = started_until(cmd, partial, 5, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        s.stop()
    assert p.returncode == 130 and "interrupted" in err, err[-2000:]
    meta = json.loads((tmp_path / "out/rationales.json").read_text())
    assert meta["complete"] is False and meta["splits"]["train"]["rows"] == len(partial.read_text().splitlines()) >= 5
    # the closing line: the rows kept, of how many, and the command that resumes (the same one)
    import re
    import shlex

    m = re.search(r"interrupted: (\d+) of (\d+) rows kept in (\S+) \((\d+) this run\); resume with: (.+)", err)
    assert m, err[-2000:]
    assert int(m.group(1)) == sum(s["rows"] for s in meta["splits"].values()) and int(m.group(2)) > int(m.group(1))
    assert shlex.split(m.group(5)) == ["mmi-ray", *cmd[3:]]


@pytest.mark.parametrize("case,problem", [
    ("unreachable", "cannot reach the teacher"),
    ("key", "refused the key (HTTP 401)"),
    ("model", "--teacher box-teacher: the server at"),
])
def test_a_teacher_that_cannot_be_asked_is_one_line_and_exit_2(tmp_path, capsys, case, problem, monkeypatch):
    s = TeacherServer(api_key="right", model="other-model" if case == "model" else MODEL).start()
    url = s.url
    if case == "unreachable":
        s.stop()
    monkeypatch.setenv("OPENAI_API_KEY", "wrong" if case == "key" else "right")
    try:
        rc = run_cli(tmp_path, small_csv(tmp_path), url, "--retries", "1", "--timeout", "2")
    finally:
        if case != "unreachable":
            s.stop()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and problem in err[0], err
    assert not (tmp_path / "out/train.jsonl").exists()
    # the folder it left reads as not complete, with what to do, not as a folder without split files
    assert main(["data", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "the rationales are not complete" in err and "run the same mmi-ray rationales command" in err, err


def test_rows_written_under_other_settings_are_kept_unless_forced(tmp_path, server, capsys):
    csv = small_csv(tmp_path)
    assert run_cli(tmp_path, csv, server.url) == 0
    before = (tmp_path / "out/train.jsonl").read_bytes()
    rc = run_cli(tmp_path, csv, server.url, "--temperature", "0.7")
    assert rc == 2 and "other teacher settings" in capsys.readouterr().err
    assert (tmp_path / "out/train.jsonl").read_bytes() == before
    assert run_cli(tmp_path, csv, server.url, "--temperature", "0.7", "--force") == 0
    meta = json.loads((tmp_path / "out/rationales.json").read_text())
    assert meta["teacher"]["sampling"]["temperature"] == 0.7


def test_rows_written_for_other_data_are_not_taken_for_this_data(tmp_path, server, capsys):
    csv = small_csv(tmp_path)
    assert run_cli(tmp_path, csv, server.url) == 0
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")  # two rows swapped
    assert run_cli(tmp_path, csv, server.url) == 2
    assert "row train-0 was written for another input" in capsys.readouterr().err
    assert run_cli(tmp_path, csv, server.url, "--force") == 0
    rows = read_out(tmp_path / "out", "train")
    assert rows[0]["input"] == lines[2].split(",")[0] and rows[0]["rationale"]


def test_new_rationales_give_a_new_run_identity(tmp_path, server):
    from mmi_ray.config import load_config
    from mmi_ray.reuse import identity

    csv = small_csv(tmp_path)
    assert run_cli(tmp_path, csv, server.url) == 0
    cfg = load_config(REPO / "configs/tiny_props.yaml", ["data.dataset=custom", f"data.path={tmp_path / 'out'}"])
    first = identity(cfg)
    assert run_cli(tmp_path, csv, server.url, "--temperature", "0.5", "--force") == 0
    assert identity(cfg) != first


def test_the_completions_api_is_asked_with_the_raw_prompt(tmp_path, server):
    assert run_cli(tmp_path, small_csv(tmp_path), server.url, "--api", "completions") == 0
    assert all(p.rstrip().endswith("A:") for _, p in server.requests)
    assert all(r["parsed"] for r in read_out(tmp_path / "out", "train"))


def test_backend_describe_keeps_no_key(monkeypatch):
    monkeypatch.setenv("SECRET_KEY_ENV", "sk-12345")
    b = OpenAIBackend("m", "http://127.0.0.1:1/v1", "SECRET_KEY_ENV", sampling=Sampling())
    assert "sk-12345" not in json.dumps(b.describe())


def test_generate_from_a_dss_folder_with_a_shipped_prompt(tmp_path, dss_dir):
    """The DSS gold rows (cqa) through the shipped DSS prompt: choice answers, options in the prompt."""
    seen = []

    class Echo:
        name = "echo"

        def describe(self):
            return {"backend": "echo", "model": "echo", "sampling": Sampling().as_dict()}

        def run(self, requests, done):
            from mmi_ray.teacher.backends import Outcome

            for rid, prompt, *_ in requests:
                seen.append(prompt)
                done(rid, "Some reasoning. So the answer is (b) body of water.")
            return Outcome(asked=len(requests))

    data = data_config(str(dss_dir / "cqa"), ["custom.label_kind=choice", "custom.columns.input=question",
                                              "custom.columns.label=answer"])
    report = generate(data, load_prompt("cqa"), Echo(), tmp_path / "cqa", splits=["test"], limit=5)
    assert report.complete and report.splits["test"].rows == 5
    assert "Answer Choices:\n(a)" in seen[0] and seen[0].rstrip().endswith("A:")
    rows = read_out(tmp_path / "cqa", "test")
    assert all(r["teacher_answer"] == r["choices"][1] for r in rows)


def test_the_stand_in_teacher_detaches_once_it_listens_and_a_failure_is_seen():
    """`python examples/teacher_server.py --port N &` failed unseen in the background (a bare `python`
    without the project): `--detach` returns once the port is bound, naming the process to stop, and
    a port already taken is one line and exit 2 in the foreground."""
    import re
    import urllib.request

    script = str(REPO / "examples" / "teacher_server.py")
    r = subprocess.run([sys.executable, script, "--port", "0", "--detach"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    url, pid = re.search(r"at (http://127\.0\.0\.1:\d+/v1), in the background \(stop it with: kill (\d+)\)",
                         r.stdout).groups()
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=10) as reply:
            assert MODEL in reply.read().decode()
        port = url.rsplit(":", 1)[1].split("/")[0]
        taken = subprocess.run([sys.executable, script, "--port", port, "--detach"], capture_output=True, text=True,
                               timeout=60)
        assert taken.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
        assert "Traceback" not in taken.stderr and taken.stdout == ""
    finally:
        os.kill(int(pid), signal.SIGTERM)


def test_a_dry_run_prices_what_is_left_to_ask_and_asks_nothing(tmp_path, server, capsys):
    """--dry-run: the rows and requests still to send (a greedy teacher: one per distinct prompt;
    none for rows written before), their prompts' tokens and the cost at the prices given; nothing
    asked, nothing written. Without a price: one line naming the flag, exit 2."""
    csv = small_csv(tmp_path)
    assert run_cli(tmp_path, csv, server.url, "--dry-run") == 2
    assert "--dry-run: needs --price-in and --price-out" in capsys.readouterr().err
    assert run_cli(tmp_path, csv, server.url, "--dry-run", "--price-in", "2", "--price-out", "8") == 0
    out = capsys.readouterr().out
    assert server.requests == [] and not (tmp_path / "out").exists()
    m = re.search(r"dry run: (\d+) rows to answer with (\d+) requests.*prompts: ([\d,]+) tokens \(estimated at 4 "
                  r"characters a token\); replies: at most ([\d,]+) tokens", out, re.S)
    assert m, out
    rows, requests, tokens_in, tokens_out = (int(g.replace(",", "")) for g in m.groups())
    assert rows == 16 and 0 < requests <= 16 and tokens_out == requests * 256
    assert f"${tokens_in * 2 / 1e6:,.2f} for the prompts + at most ${tokens_out * 8 / 1e6:,.2f}" in out
    # after a real run nothing is left to ask
    assert run_cli(tmp_path, csv, server.url) == 0
    assert run_cli(tmp_path, csv, server.url, "--dry-run", "--price-in", "2", "--price-out", "8") == 0
    assert "dry run: 0 rows to answer with 0 requests" in capsys.readouterr().out


def test_three_samples_a_row_from_a_noisy_flaky_teacher_resume_after_ctrl_c_and_vote(tmp_path, capsys):
    """A loopback teacher wrong on about 30% of its (prompt, seed) pairs and failing now and then
    (429, 500) is asked 3 samples a row at temperature 0.7; the run is interrupted (SIGINT) and the
    same command finishes it. Every row has its 3 samples (seeds 0, 1, 2), none asked twice; the
    majority answer per row and its accuracy follow what the server answered; the tokens equal the
    server's count; the trainer reads 1 or 3 samples a row, and data.rationales.keep: correct drops
    exactly the samples the server answered wrong."""
    from collections import Counter

    from mmi_ray.data import load_splits
    from mmi_ray.errors import DataError

    csv = small_csv(tmp_path, 16)
    s = TeacherServer(faults=["ok"] * 6 + ["429", "slow:0.3", "500"] + ["slow:0.3"] * 12, wrong_share=0.3).start()
    out = tmp_path / "out"
    cmd = [*rationales_cmd(csv, s.url, out, 1), "--samples", "3", "--temperature", "0.7", "--retries", "3"]
    try:
        p = started_until(cmd, out / "train.jsonl.partial", 8, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 130 and "rows kept" in err, err[-2000:]
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        s.stop()
    assert r.returncode == 0, r.stderr[-2000:]
    lines = read_out(out, "train") + read_out(out, "valid")
    assert len(lines) == 3 * 20 and Counter(x["sample"] for x in lines) == {0: 20, 1: 20, 2: 20}
    asked = Counter((p_, seed) for p_, seed, _ in s.replies)
    # none asked twice but the one in flight when Ctrl-C came (answered, not written: asked again)
    assert sum(n - 1 for n in asked.values()) <= 1 and sorted({seed for _, seed in asked}) == [0, 1, 2]
    assert len(asked) == 3 * 20
    # what the server answered, per row: its majority is the row's majority_answer
    wrong = {(p_, seed): w for p_, seed, w in s.replies}
    meta = json.loads((out / "rationales.json").read_text())
    for split in ("train", "valid"):
        rows = read_out(out, split)
        by_row = {}
        for x in rows:
            by_row.setdefault(x["id"].split(".")[0], []).append(x)
        right = sum(sum(x["teacher_answer"] == x["label"] for x in g) >= 2 for g in by_row.values())
        assert meta["splits"][split]["majority_correct"] == right
        assert all(len({x["majority_answer"] for x in g}) == 1 for g in by_row.values())
    assert meta["samples_per_row"] == 3 and "majority answer over 3 samples" in r.stdout
    assert sum(wrong.values()) == sum(x["teacher_answer"] != x["label"] for x in lines) > 0
    # the tokens: the server's count of every reply it sent, but the one answered after Ctrl-C (billed, never seen)
    seen, kept_usage = set(), [0, 0]
    for (p_, seed, _), u in zip(s.replies, s.usage):
        if (p_, seed) not in seen:
            seen.add((p_, seed))
            kept_usage = [kept_usage[0] + u[0], kept_usage[1] + u[1]]
    assert [sum(m["tokens_in"] for m in meta["splits"].values()),
            sum(m["tokens_out"] for m in meta["splits"].values())] == kept_usage
    # training reads them: one sample a row, or all three as examples; keep: correct drops the wrong ones
    one = load_splits(data_config(str(out), []))
    three = load_splits(data_config(str(out), ["rationales.per_row=3"]))
    assert len(three.train) == 3 * len(one.train) and len(three.valid) == len(one.valid) == 4
    kept = load_splits(data_config(str(out), ["rationales.per_row=3", "rationales.keep=correct"]))
    train_wrong = sum(x["teacher_answer"] != x["label"] for x in read_out(out, "train"))
    assert 0 < train_wrong and len(kept.train) == len(three.train) - train_wrong == 48 - train_wrong
    with pytest.raises(DataError, match=r"data.rationales.per_row: 4, but .* holds 3 rationale\(s\) a row"):
        load_splits(data_config(str(out), ["rationales.per_row=4"]))


@pytest.mark.parametrize("flags,problem", [(["--samples", "0"], "--samples: must be >= 1 (got 0)"),
                                           (["--samples", "3"], "--samples 3: needs --temperature > 0")])
def test_bad_samples_are_one_line_and_nothing_is_asked(tmp_path, server, capsys, flags, problem):
    assert run_cli(tmp_path, small_csv(tmp_path), server.url, *flags) == 2
    err = capsys.readouterr().err
    assert problem in err and len(err.strip().splitlines()) == 1 and server.requests == []


def test_rows_without_gold_are_labelled_by_the_teachers_majority_when_asked_to(tmp_path, capsys):
    """data.custom.unlabelled: teacher: rows with no gold label are asked all the same; the teacher's
    accuracy is over the labelled rows; in training they carry the majority answer over the samples
    as their label (validation is carved from labelled rows only); keep: correct refuses them."""
    from mmi_ray.data import load_splits
    from mmi_ray.errors import DataError

    lines = (REPO / "examples/boxes.csv").read_text().splitlines()
    train = lines[1:17]
    train = [x if i < 10 else x.rsplit(",", 2)[0] + ",," + x.rsplit(",", 1)[1] for i, x in enumerate(train)]
    csv = tmp_path / "rows.csv"
    csv.write_text("\n".join([lines[0], *train, *[x for x in lines if x.endswith(",valid")][:4]]) + "\n")
    s = TeacherServer(wrong_share=0.3).start()
    try:
        rc = main(["rationales", str(csv), *COLUMNS, "custom.unlabelled=teacher", "--teacher", MODEL, "--base-url", s.url,
                   "--out", str(tmp_path / "out"), "--samples", "3", "--temperature", "0.7"])
    finally:
        s.stop()
    assert rc == 0, capsys.readouterr().err
    assert "of 30" in capsys.readouterr().out  # the teacher's accuracy over the 10 labelled rows' 30 samples
    meta = json.loads((tmp_path / "out/rationales.json").read_text())
    assert meta["splits"]["train"]["labelled"] == 30 and meta["splits"]["train"]["rows"] == 48
    out = str(tmp_path / "out")
    sp = load_splits(data_config(out, ["custom.unlabelled=teacher"]))
    taught = [e for e in sp.train.examples if not e.gold]
    written = {x["input"]: x["majority_answer"] for x in read_out(tmp_path / "out", "train") if not x["label"]}
    assert len(taught) == 6 and all(e.label == written[e.input] and e.label for e in taught)
    assert all(e.gold for e in sp.valid.examples)
    with pytest.raises(DataError, match="data.rationales.keep: correct needs gold labels"):
        load_splits(data_config(out, ["custom.unlabelled=teacher", "rationales.keep=correct"]))
    with pytest.raises(DataError, match="line 31: missing or empty key 'label'"):
        load_splits(data_config(out, []))
