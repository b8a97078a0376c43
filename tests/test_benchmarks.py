"""Benchmark scripts run in a small mode (their timings are never asserted)."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def test_mi_overhead_small_mode(tmp_path, capsys):
    import mi_overhead

    res = mi_overhead.main(["--pairs", "2", "--steps", "1", "--batch", "4", "--variants", "maxpool",
                            "maxpool (released, unfused)", "--out", str(tmp_path / "B.md")])
    assert list(res["ratios"]) == ["DSS", "maxpool", "maxpool (released, unfused)"]
    assert res["ratios"]["DSS"] == [1.0, 1.0] and all(len(v) == 2 and min(v) > 0 for v in res["ratios"].values())
    assert all(min(v) > 0 for v in res["tokens_per_s"].values()) and min(res["peak_rss_mb"].values()) > 100
    text = (tmp_path / "B.md").read_text()
    assert "| maxpool |" in text and "python benchmarks/mi_overhead.py --pairs 2" in text
    assert "maxpool's extra memory:" in text


def test_numerics_small_mode_threads_agree_and_the_dispatch_is_read_back(capsys):
    """Threads change no float, on MKL's Intel code path too (what CI's Intel Xeons run; emulated
    here on any x86 CPU): 1 and 2 threads give one model under mmi_ray's MKL_CBWR, and without its
    STRICT rule they give two (so the emulation reaches the path where the thread count matters)."""
    import numerics

    rows = numerics.main(["--steps", "2", "--threads", "1", "2", "--capabilities", "native", "default",
                          "--mkl-as-intel", "--mkl-cbwr", "AUTO"])
    assert [(r["setting"], r["threads"]) for r in rows] == [
        ("native", 1), ("native", 2), ("default", 1), ("MKL_CBWR=AUTO", 1), ("MKL_CBWR=AUTO", 2)]
    assert rows[0]["params"] == rows[1]["params"]  # threads: the same model
    assert "mkl AUTO,STRICT" in rows[0]["machine"] and "mkl AUTO |" in rows[3]["machine"]
    assert rows[3]["params"] != rows[4]["params"]  # MKL without STRICT on the Intel path: not the same
    assert rows[2]["capability"] == "DEFAULT" and "params hash" in capsys.readouterr().out


@pytest.mark.skipif(not __import__("torch").backends.mkl.is_available(), reason="torch without MKL")
def test_mmi_ray_sets_mkl_strict_mode_before_the_first_blas_call():
    """MKL reads MKL_CBWR once, at its first call: importing mmi_ray first is enough, and a user's
    own value is kept."""
    code = ("import mmi_ray, torch; a = torch.ones(8, 8); a @ a; "
            "from mmi_ray.machine import describe; print(describe())")
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "MKL_VERBOSE": "1"}, capture_output=True,
                         text=True, check=True).stdout
    assert "CNR:AUTO,STRICT" in out and "mkl AUTO,STRICT" in out
    out = subprocess.run([sys.executable, "-c", code], env={**env, "MKL_VERBOSE": "1", "MKL_CBWR": "COMPATIBLE,STRICT"},
                         capture_output=True, text=True, check=True).stdout
    assert "CNR:COMPATIBLE,STRICT" in out and "mkl COMPATIBLE,STRICT" in out


def test_equation_metric_small_mode(tmp_path):
    import equation_metric

    res = equation_metric.main(["--n", "200", "--repeats", "2", "--out", str(tmp_path / "B.md")])
    assert 0 < res["min_s"] <= res["median_s"] <= res["max_s"]
    assert "### Equation metric" in (tmp_path / "B.md").read_text()


def test_beyond_accuracy_small_mode(tmp_path):
    import beyond_accuracy

    rows = beyond_accuracy.main(["--steps", "4", "--rationales", "6", "--out", str(tmp_path / "B.md"),
                                 "data.builtin.num_train=100", "model.d_model=32", "model.d_ff=64"])
    assert [r["method"] for r in rows] == ["label-only", "DSS", "MI (maxpool)"]
    assert all(0 <= r["val_ece"] <= 1 and r["rationale_s"] > 0 and r["train_s"] > 0 for r in rows)
    assert "### Beyond accuracy" in (tmp_path / "B.md").read_text()


@pytest.mark.ray
def test_gpu_check_small_mode_runs_ray_train_and_restores_and_repeats_exactly(ray_session, tmp_path):
    """The GPU check's CPU smoke mode: generated rows of the DSS shape through Ray Train, the restore
    check and the determinism check (equal on CPU), the memory estimate beside it."""
    import gpu_check

    res = gpu_check.main(["--small", "--no-causal", "--out", str(tmp_path / "B.md")])  # causal: the next test
    assert res["examples_per_s"] > 0 and res["workers"] == [1] and res["causal"] == []
    assert res["restore_diff"] == 0.0 and res["repeat_diff"] == 0.0  # on CPU: identical
    assert res["estimate_gib"] > 0 and res["sdpa_over_eager"] > 0
    text = (tmp_path / "B.md").read_text()
    assert "| restored from step 2 vs uninterrupted" in text and "through Ray Train, 1 worker(s)" in text
    assert "| trials sharing one GPU (gpus_per_worker 0.25) | n/a (no GPU) |" in text  # its spec validated


def test_gpu_check_decoder_only_rows_train_the_offline_qwen2_student_in_process(tmp_path):
    """The GPU check's decoder-only rows on the CPU: an offline Qwen2-shaped student (read as a causal
    LM from its folder), LoRA and full, each run beside the plan's estimate for its own shape."""
    import json

    import gpu_check
    import torch

    path = gpu_check.generated_rows(tmp_path / "rows.jsonl", 200, small=True)
    texts = [json.loads(x)[k] for x in path.read_text().splitlines() for k in ("input", "label", "rationale")]
    rows, res = gpu_check.causal_rows(tmp_path, texts, ["data.dataset=custom", f"data.path={path}"],
                                      torch.device("cpu"), steps=4, batch=2, small=True)
    assert [r["variant"] for r in res] == [v for v, _ in gpu_check.CAUSAL_VARIANTS] and len(rows) == 3
    assert all(r["examples_per_s"] > 0 and r["peak_gib"] is None and not r["eager"] for r in res)  # CPU: SDPA
    lora, full = res[0], res[1]
    assert lora["lora"] == 16 and full["lora"] == 0 and lora["estimate_gib"] < full["estimate_gib"]
    assert all("n/a (CPU)" in r and "decoder-only" in r for r in rows)


def test_gpu_mfu_small_mode_counts_flops(tmp_path):
    import gpu_mfu

    res = gpu_mfu.main(["--small", "--out", str(tmp_path / "B.md")])
    assert res["device"] == "cpu" and res["mfu"] is None and res["model_tflops_per_s"] > 0
    # the analytic count, by hand for t5-v1_1-base, one 512-token input and a 128-token target:
    # 2 x (weight matmuls per token x tokens + cross-attention K/V + attention scores/sums + output layer)
    from mmi_ray.sizing import pass_flops, step_flops

    c = gpu_mfu.shape(gpu_mfu.t5_base_config(small=False))
    enc_w, dec_w = 12 * (4 * 768 * 768 + 3 * 768 * 2048), 12 * (6 * 768 * 768 + 3 * 768 * 2048)
    attn = 12 * 2 * 512 * 512 * 768 + 12 * (2 * 128 * 128 * 768 + 2 * 128 * 512 * 768)
    by_hand = 2 * (enc_w * 512 + dec_w * 128 + 12 * 2 * 768 * 768 * 512 + attn + 128 * 768 * 32128)
    assert pass_flops(c, 512, 128) == by_hand
    assert step_flops(c, 2, 512, 8, 128) == 3 * 2 * (pass_flops(c, 512, 8) + by_hand)
    assert gpu_mfu.peak_tflops("NVIDIA H200", None) == 989.0 and gpu_mfu.peak_tflops("cpu", 5.0) == 5.0


def test_search_efficiency_replay_on_a_known_table():
    """A table where one configuration is best: the replay must find it and count the steps."""
    import search_efficiency as se

    grid = {"a": [0, 1, 2, 3]}
    table = {(v,): {10: 0.1 * v, 20: 0.2 * v} for v in grid["a"]}
    cost = se.replay(table, grid, budget=20, target=0.6 - 1e-9, seed=0, grace=10, eta=2)
    assert 20 <= cost <= 4 * 20 + 20 * 10  # found: at least one full run, at most a few repeats
    assert se.grid_points({"x": [1, 2], "y": ["a"]}) == [{"x": 1, "y": "a"}, {"x": 2, "y": "a"}]
    for seed in range(5):
        alone, again, resumed = {}, {}, {}
        # TPE alone: every trial trains to the full budget
        assert se.replay(table, grid, 20, 0.6 - 1e-9, seed, grace=None, eta=2, stats=alone) == 20 * alone["trials"]
        full = se.replay(table, grid, 20, 0.6 - 1e-9, seed, grace=10, eta=2, stats=again)
        # a configuration proposed again resumes: no configuration's steps are paid twice
        cheap = se.replay(table, grid, 20, 0.6 - 1e-9, seed, grace=10, eta=2, stats=resumed, resume=True)
        assert cheap <= 20 * resumed["distinct"] and cheap <= full
        assert resumed["distinct"] <= resumed["trials"] and again["distinct"] <= again["trials"]
    # --startup reaches TPE: fewer random proposals before it models change what it proposes (seeded)
    big = {"a": list(range(12))}
    tab = {(v,): {10: 0.05 * v, 20: 0.05 * v} for v in big["a"]}
    runs = {k: [se.replay(tab, big, 20, 0.55 - 1e-9, seed, grace=None, eta=2, startup=k) for seed in range(8)]
            for k in (1, 10)}
    assert runs[1] != runs[10]


def test_search_efficiency_median_interval_covers_at_least_its_level_and_is_the_narrowest_that_does():
    import search_efficiency as se

    def coverage(n: int, k: int) -> float:  # P(the k-th smallest <= median <= the (n-k+1)-th), 1-based
        return sum(math.comb(n, i) for i in range(k, n - k + 1)) / 2 ** n

    assert se.median_ci([float(v) for v in range(1, 51)]) == (18.0, 33.0)
    for n in (10, 20, 50, 51):
        lo, hi = se.median_ci(list(range(1, n + 1)))
        assert hi == n + 1 - lo and coverage(n, lo) >= 0.95 > coverage(n, lo + 1)
    assert se.median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few for 95%: the whole range
    assert se.median_ci([1.0] * 30 + [math.inf] * 20)[1] == math.inf  # never-reached replays count as largest


def test_search_efficiency_seed_runs_share_the_cores_when_a_trial_has_more_seeds_than_cores():
    """A grid trial trains its seeds side by side and must fit the machine (3 seeds x 1 CPU on 2
    cores could never be placed: a ConfigError before any training)."""
    import search_efficiency as se

    assert se.seed_cpus(1, 2) == 1.0
    assert se.seed_cpus(2, 2) == 1.0
    assert se.seed_cpus(3, 2) == 0.66 and 3 * se.seed_cpus(3, 2) <= 2
    assert se.seed_cpus(7, 4) == 0.57 and 7 * se.seed_cpus(7, 4) <= 4


def test_search_efficiency_table_is_the_mean_over_seeds_at_each_rung():
    """A grid trained with several seeds: each configuration's curve is its seeds' mean per step (a
    seed's record written twice counts once, its newest), not whichever seed came last."""
    import pandas as pd
    import search_efficiency as se

    runs = pd.DataFrame({"lr": [1, 1, 1, 1, 1, 2, 2], "seed": [0, 0, 1, 1, 1, 0, 0],
                         "step": [10, 20, 10, 20, 20, 10, 20],
                         "val_accuracy": [0.2, 0.4, 0.4, 0.5, 0.6, 0.1, 0.3]})
    table = se.table_from_runs(runs, {"lr": [1, 2]})
    assert table[(1,)] == {10: pytest.approx(0.3), 20: pytest.approx(0.5)}  # seed 1's step 20: 0.6, its newest
    assert table[(2,)] == {10: pytest.approx(0.1), 20: pytest.approx(0.3)}


def test_search_efficiency_fair_grids_are_valid_configs_that_meet_the_issues_conditions():
    """Every --fair grid point is a config the sweep accepts, on >= 1,000 validation examples of one
    family, with at least 3 rungs before the full budget (issue 17, item 4)."""
    import search_efficiency as se

    from mmi_ray.config import load_config

    for task, (grid, overrides) in se.FAIR.items():
        assert overrides["data.builtin.tasks"] == [task]
        assert overrides["data.builtin.num_valid"] >= 1000
        assert overrides["train.max_steps"] // overrides["train.eval_every"] >= 4
        for point in se.grid_points(grid):
            over = [f"{k}={v}" for k, v in {**overrides, **point}.items()]
            cfg = load_config(se.REPO / "configs" / "tiny_builtin.yaml", over)
            assert cfg.optim.lr == point["optim.lr"] and cfg.data.builtin.tasks == [task]


def test_search_efficiency_seed_margin_and_one_grid_across_folders(tmp_path):
    """The best's margin over the runner-up in seed-to-seed standard errors; folders given together
    must hold one grid (the error names the file and the key)."""
    import search_efficiency as se

    per_seed = {("a",): [0.60, 0.64, 0.62], ("b",): [0.55, 0.61, 0.58], ("c",): [0.5]}
    se_diff = math.sqrt(0.02 ** 2 / 3 + 0.03 ** 2 / 3)
    assert se.seed_margin(per_seed, ("a",), ("b",)) == pytest.approx(0.04 / se_diff)
    assert math.isnan(se.seed_margin(per_seed, ("a",), ("c",)))
    spec = {"spec": {"search": {"optim.lr": {"type": "choice", "values": [1e-3]}}, "overrides": {"x": 1}}}
    other = {"spec": {**spec["spec"], "overrides": {"x": 2}}}
    assert se.same_grid({tmp_path / "a": spec, tmp_path / "b": spec}) is spec
    with pytest.raises(SystemExit, match=r"b/sweep_spec.yaml: spec.overrides differs"):
        se.same_grid({tmp_path / "a": spec, tmp_path / "b": other})


def test_search_efficiency_conditions_show_whether_the_grid_can_judge_a_search():
    """Rung-to-final rank correlation and the best's margin in standard errors, on known tables."""
    import search_efficiency as se

    # rungs rank the configurations as the end does; the best clears the runner-up by 10 points
    table = {(v,): {10: 0.1 * v, 20: 0.2 * v + 0.1 * (v == 3)} for v in range(4)}
    c = se.conditions(table, budget=20, n_valid=1000)
    assert c["rung_spearman"] == {10: pytest.approx(1.0)}
    assert c["best"] == pytest.approx(0.7) and c["runner_up"] == pytest.approx(0.4)
    se_diff = ((0.7 * 0.3 + 0.4 * 0.6) / 1000) ** 0.5
    assert c["margin_runner_up_se"] == pytest.approx(0.3 / se_diff)
    assert c["se_points"] == pytest.approx(100 * (0.7 * 0.3 / 1000) ** 0.5)
    # rungs in reverse order of the end: the correlation says so; 100 examples make the same gap noise
    rev = {(v,): {10: -0.1 * v, 20: 0.30 + 0.01 * v} for v in range(4)}
    c = se.conditions(rev, budget=20, n_valid=100)
    assert c["rung_spearman"][10] == pytest.approx(-1.0)
    assert c["margin_runner_up_se"] < 1
    flat = {(v,): {10: 0.12, 20: 0.1 * v} for v in range(4)}  # a rung where all score alike ranks nothing
    assert math.isnan(se.conditions(flat, budget=20, n_valid=1000)["rung_spearman"][10])


def test_scaling_cpu_split_counts_each_process_once_by_its_role():
    """The --cpu-split arithmetic on made-up snapshots: deltas over the window, a process started
    inside it from zero, an idle worker that became a Train worker by its new role, the driver apart."""
    import scaling

    assert scaling.role("ray::RayTrainWorker.run_train_fn") == "Ray Train workers"
    assert scaling.role("ray::TrainController.run") == scaling.role("ray::PlacementGroupCleaner") \
        == "Ray Train's helper actors"
    assert scaling.role("/v/bin/python /v/ray/dashboard/dashboard.py --host=127.0.0.1") == \
        scaling.role("ray-dashboard-NodeHead-0 (/v/bin/python -B -c ...)") == "dashboard (head and its modules)"
    assert scaling.role("/v/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp") == "GCS and raylet"
    assert scaling.role("ray::IDLE") == "idle Ray workers" and scaling.role("kdamond.0") == scaling.REST
    assert scaling.role("ray::RayTrainWorker", is_driver=True) == scaling.DRIVER
    before = {1: ("ray::IDLE", 10.0), 2: ("ray::TrainController.run", 5.0), 3: ("raylet", 1.0), 4: ("python bench", 7.0),
              5: ("ray::IDLE", 2.0)}
    after = {1: ("ray::RayTrainWorker", 28.0), 2: ("ray::TrainController.run", 5.5), 3: ("raylet", 1.2),
             4: ("python bench", 7.4), 6: ("ray::RayTrainWorker", 19.0), 7: ("kworker/0:1", 0.1)}  # 5 ended, 6 is new
    used = scaling.split_cpu(before, after, seconds=20.0, driver_pid=4)
    assert used["Ray Train workers"] == pytest.approx((18.0 + 19.0) / 20 * 100)
    assert used["Ray Train's helper actors"] == pytest.approx(2.5) and used["GCS and raylet"] == pytest.approx(1.0)
    assert used[scaling.DRIVER] == pytest.approx(2.0) and used[scaling.REST] == pytest.approx(0.5)
    assert used["idle Ray workers"] == 0.0  # pid 5 ended inside the window: not seen
    lines = scaling.split_table([{**used, "window_s": 20.0}] * 2, workers=2)
    row = next(x for x in lines if x.startswith("| Ray Train workers |"))
    assert row.startswith("| Ray Train workers | 185.0 [185.0, 185.0] |")


def test_scaling_lean_side_turns_rays_background_work_down_and_gives_back_the_users(monkeypatch):
    """--lean starts Ray with its periodic background work turned down (each value differs from Ray
    2.60's own), and the other runs get back what the environment held before (a user's value, or
    nothing: Ray's defaults)."""
    import os

    import scaling
    from ray.train.v2._internal.constants import DEFAULT_PREEMPTION_POLL_INTERVAL_S

    assert float(scaling.LEAN["RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S"]) > DEFAULT_PREEMPTION_POLL_INTERVAL_S
    assert scaling.LEAN["RAY_enable_metrics_collection"] == "0"
    for key in scaling.LEAN:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_event_stats", "1")  # the user's own
    saved = {key: os.environ.get(key) for key in scaling.LEAN}
    scaling.ray_settings("lean", saved)
    assert {k: os.environ[k] for k in scaling.LEAN} == scaling.LEAN
    assert os.environ.get("RAY_worker_niceness") is None  # only --nice0 sets it
    scaling.ray_settings("ray", saved)
    assert {k: os.environ.get(k) for k in scaling.LEAN} == {**dict.fromkeys(scaling.LEAN), "RAY_event_stats": "1"}
    # --nice0: only the workers' niceness, Ray's background work as it was
    scaling.ray_settings("nice0", saved | {"RAY_worker_niceness": None})
    assert os.environ["RAY_worker_niceness"] == "0" and os.environ["RAY_event_stats"] == "1"
    assert all(os.environ.get(k) is None for k in scaling.LEAN if k != "RAY_event_stats")
    scaling.ray_settings("ray", saved | {"RAY_worker_niceness": None})
    assert os.environ.get("RAY_worker_niceness") is None


@pytest.mark.ray
def test_ray_benchmarks_small_mode(ray_session, tmp_path):
    """scaling.py, sweep_overhead.py and search_efficiency.py end to end on tiny runs (shared Ray)."""
    import scaling
    import search_efficiency
    import sweep_overhead

    rows = scaling.main(["--steps", "6", "--eval-every", "2", "--batch", "4", "--workers", "2", "--rounds", "1",
                         "--ceiling", "--beside-ray", "--ddp", "--cpu-split", "--out", str(tmp_path / "B.md"),
                         "model.d_model=32", "model.d_ff=64", "model.num_layers=1", "data.builtin.num_train=200"])
    assert [(r["side"], r["workers"]) for r in rows] == [("ray", 2), ("plain", 2), ("beside", 2), ("ddp", 2)]
    assert rows[0]["vs_ddp"] == [rows[0]["examples_per_s"] / rows[3]["examples_per_s"]] and rows[3]["vs_plain"]
    assert rows[0]["examples_per_s"] > 0 and rows[1]["examples_per_s"] > 0
    assert rows[2]["vs_plain"] == [rows[2]["examples_per_s"] / rows[1]["examples_per_s"]]
    assert rows[0]["vs_plain"] == [rows[0]["examples_per_s"] / rows[1]["examples_per_s"]]
    assert "| 2 plain process(es) at once, no Ray |" in (tmp_path / "B.md").read_text()
    assert "| 2 plain process(es) at once beside an idle local Ray |" in (tmp_path / "B.md").read_text()
    assert "| 2 plain processes, one model data-parallel (DDP, gloo), no Ray |" in (tmp_path / "B.md").read_text()
    [split] = rows[0]["cpu_split"]  # the Ray run watched from its first report to its second-to-last
    assert split["window_s"] > 0 and split["Ray Train workers"] > 0  # a window of a step or two: nothing else is sure to show
    assert "| Ray Train's helper actors |" in (tmp_path / "B.md").read_text()

    res = sweep_overhead.main([str(REPO / "sweeps" / "quickstart.yaml"), "num_trials=3", "scheduler.type=none",
                               "overrides.data.builtin.num_test=10",
                               "overrides.train.max_steps=4", "overrides.train.eval_every=2",
                               "overrides.data.builtin.num_train=200", "overrides.data.builtin.num_valid=10",
                               "overrides.model.d_model=32", "overrides.model.d_ff=64", "--repeats", "1",
                               "--out", str(tmp_path / "B.md")])
    assert res["trials"] == 3 and res["command_s"] > res["wall_s"] and len(res["runs"]) == 1 and res["train_s"] > 0 and res["ratio"] > 0
    assert res["trial_total_s"] >= res["train_s"] and res["slots"] >= 1

    eff = search_efficiency.main(["--small", "--replays", "3", "--keep", str(tmp_path / "grid"),
                                  "--out", str(tmp_path / "B.md")])
    assert eff["grid_points"] == 4 and eff["budget"] == 6 and 0 < eff["median_share"] <= 10
    assert set(eff["conditions"]["rung_spearman"]) == {2, 4}
    # the same grid with another seed, in a folder of its own: replayed together, on their mean
    search_efficiency.main(["--small", "--seeds", "1", "--replays", "2", "--keep", str(tmp_path / "grid1")])
    dirs = [tmp_path / "grid" / "grid", tmp_path / "grid1" / "grid"]
    small = {"loss.mi_weight": [0.0, 0.1], "optim.lr": [1e-3, 3e-3]}
    table, budget, per_seed = search_efficiency.curves(dirs, small)
    assert budget == 6 and all(len(v) == 2 for v in per_seed.values())
    assert all(table[k][6] == pytest.approx(sum(v) / 2) for k, v in per_seed.items())
    with pytest.raises(SystemExit, match="seed 0 is also in"):
        search_efficiency.curves([dirs[0], dirs[0]], small)
    both = search_efficiency.main(["--grid-dir", *map(str, dirs), "--replays", "2", "--out", str(tmp_path / "S.md")])
    assert both["grid_points"] == 4 and both["grid_best"] == pytest.approx(max(table[k][6] for k in table))
    assert "seed-to-seed s.e." in (tmp_path / "S.md").read_text()
    text = (tmp_path / "B.md").read_text()
    for title in ("Data-parallel scaling", "Sweep overhead", "Search efficiency"):
        assert f"### {title}" in text


def test_the_causal_benchmarks_small_mode(tmp_path):
    """Issue 42's two figures: the MI term at Qwen2.5's vocabulary against DSS on the decoder-only
    student, and mmi-ray's loop against a plain Trainer loop on it (smoke sizes)."""
    import lora_sizes
    import mi_overhead
    import reference_loop

    res = mi_overhead.main(["--student", "causal", "--vocab", "qwen", "--pairs", "1", "--steps", "1", "--batch", "2",
                            "--variants", "maxpool", "--no-memory"])
    assert list(res["ratios"]) == ["DSS", "maxpool"] and min(min(v) for v in res["tokens_per_s"].values()) > 0
    rows = reference_loop.main(["--student", "causal", "--builtin", "--steps", "6", "--warmup", "2", "--repeats", "1",
                                "--mi", "on", "--batch", "4", "--out", str(tmp_path / "B.md")])
    assert rows[0]["reference"] > 0 and rows[0]["ours"] > 0
    assert "a plain Trainer (prompt + continuation rows)" in (tmp_path / "B.md").read_text()
    lora_sizes.main(["--r", "8", "--models", "Qwen/Qwen2.5-0.5B", "--out", str(tmp_path / "L.md")])
    assert "| Qwen/Qwen2.5-0.5B | 494M | 5.52 GiB | 0.54M | 8 | q, v (peft's default) | 6 MiB | 0.11% |" in \
        (tmp_path / "L.md").read_text()
