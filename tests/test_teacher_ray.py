"""The ``ray-data`` teacher backend on the shared local Ray: a tiny randomly initialised causal LM
(built here with transformers, no download) answers through Ray Data ``map_batches``; the rows it
writes are exactly what the same model generates without Ray, and a rerun asks nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mmi_ray.cli import main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from teacher_throughput import build_tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.ray


def test_ray_data_backend_writes_what_the_model_generates_and_resumes(tmp_path, ray_session, capsys):
    from mmi_ray.teacher.backends import HFGenerate, Sampling

    model = build_tiny_causal_lm(tmp_path / "teacher", d_model=32, layers=1)
    rows = [{"input": f"box {a}{b}: big or not?", "label": "no"} for a in "ABCD" for b in "EFG"]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = ["rationales", str(data), "--backend", "ray-data", "--teacher", str(model), "--out", str(tmp_path / "out"),
           "--max-tokens", "12", "--batch-size", "4", "--replicas", "2", "--cpus-per-replica", "0.5"]
    rc = main(cmd)
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "this run: 12 rows answered with 12 requests" in out  # the random model does not parse: reported, kept
    written = [json.loads(x) for x in (tmp_path / "out/train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in written] == [f"train-{i}" for i in range(12)]
    meta = json.loads((tmp_path / "out/rationales.json").read_text())
    assert meta["teacher"]["backend"] == "ray-data" and meta["splits"]["train"]["rows"] == 12

    # the same greedy generation without Ray gives the same text, row for row
    from mmi_ray.teacher.prompts import load_prompt

    p = load_prompt("text")
    gen = HFGenerate(str(model), Sampling(max_tokens=12).as_dict(), "cpu")
    prompts = [p.render({"input": r["input"]}, "t") for r in rows]
    direct = gen({"id": [f"r{i}" for i in range(12)], "prompt": prompts})["text"]
    assert [r["teacher_output"] for r in written] == direct
    # tokens as the teacher's tokenizer counts them: each row's prompt, and at most --max-tokens a reply
    assert meta["splits"]["train"]["tokens_in"] == sum(len(gen.tok(q)["input_ids"]) for q in prompts)
    assert 0 < meta["splits"]["train"]["tokens_out"] <= 12 * 12
    assert main(cmd) == 0
    out = capsys.readouterr().out
    assert "0 rows answered with 0 requests (0 on the wire" in out and "12 rows kept from before" in out


def test_a_teacher_that_cannot_load_is_one_line(tmp_path, ray_session, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"input": "q", "label": "a"}) + "\n")
    rc = main(["rationales", str(data), "--backend", "ray-data", "--teacher", str(tmp_path / "no-such-model"),
               "--out", str(tmp_path / "out"), "--cpus-per-replica", "0.5"])
    err = capsys.readouterr().err
    assert rc == 2 and "the ray-data backend failed" in err and "no-such-model" in err


def test_teacher_throughput_small_mode(ray_session):
    import teacher_throughput

    rows = teacher_throughput.main(["--rows", "8", "--replicas", "1", "--batch-size", "4", "--max-tokens", "4",
                                    "--d-model", "32", "--layers", "1", "--cpus-per-replica", "0.5", "--rounds", "2"])
    assert [r["how"] for r in rows] == ["in process (no Ray)", "ray-data backend"]
    assert all(r["rows_per_s"] > 0 for r in rows) and rows[0]["ratio"] == 1.0
    assert rows[1]["ratio_min"] <= rows[1]["ratio"] <= rows[1]["ratio_max"]
