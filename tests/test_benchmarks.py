"""Benchmark scripts run in a small mode (their timings are never asserted)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_mi_overhead_small_mode(tmp_path, capsys):
    import mi_overhead

    rows = mi_overhead.main(["--steps", "1", "--batch", "4", "--out", str(tmp_path / "B.md")])
    assert [name for name, _ in rows] == ["DSS", "maxpool", "maxpool_masked", "infonce", "nwj"]
    assert all(t > 0 for _, t in rows)
    text = (tmp_path / "B.md").read_text()
    assert "| maxpool |" in text and "python benchmarks/mi_overhead.py --steps 1" in text
