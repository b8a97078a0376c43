"""The README's and docs' figures, produced from committed records of real runs, never typed in
(product tooling: it renders documentation, it measures nothing).

A record (``benchmarks/records/NAME.json``) holds what a run printed its figures from: a sweep's
confirmation runs (per arm and seed), its per-method search summary, or per-seed results of
``benchmarks/builtin_learning.py``, with the command, the date, the wall time and the machine. A
markdown file marks each generated block:

    <!-- figures: NAME -->
    ...generated, do not edit...
    <!-- /figures -->

``<!-- figures: NAME:arms -->`` renders a table record's arm table alone (no paired comparisons).

    python tools/readme_figures.py record-sweep quickstart results/quickstart-... \\
        --command "mmi-ray sweep sweeps/quickstart.yaml" --wall-s 215
    python tools/readme_figures.py record-seeds props_spread before.jsonl after.jsonl \\
        --labels before now --commands "python benchmarks/builtin_learning.py ..." "python ..."
    python tools/readme_figures.py record-session quickstart_export "mmi-ray export ..." "mmi-ray predict ..."
    python tools/readme_figures.py write      # re-render every marked block from the records
    python tools/readme_figures.py check      # exit 1 if a block differs (a test runs this)
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "benchmarks" / "records"
FILES = [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- figures: (?P<name>[\w-]+(?::arms)?) -->\n)(?P<body>.*?)(<!-- /figures -->)", re.S)


# --- records from runs

def _machines(folder: Path) -> list[str]:
    """The distinct machines the runs under ``folder`` recorded (``machine`` in their metrics)."""
    from mmi_ray.layout import MACHINE, METRICS_FILE, read_metrics

    found = {m[MACHINE] for f in folder.rglob(METRICS_FILE) for m in read_metrics(f.parent) if MACHINE in m}
    return sorted(found)


def record_sweep(name: str, sweep_dir: Path, command: str, wall_s: float) -> dict:
    """A sweep's figures: its per-method search summary and its confirmation runs."""
    from mmi_ray.layout import CONFIRM_DIR, CONFIRMATION_FILE, SWEEP_SUMMARY_FILE

    summary = json.loads((sweep_dir / SWEEP_SUMMARY_FILE).read_text())
    conf_file = sweep_dir / CONFIRM_DIR / CONFIRMATION_FILE
    confirmation = json.loads(conf_file.read_text()) if conf_file.exists() else None
    if confirmation is not None:  # where the runs lay on the machine that ran them says nothing here
        confirmation["runs"] = [{k: v for k, v in r.items() if k != "reused_from"} for r in confirmation["runs"]]
    return {"kind": "sweep", "name": name, "command": command, "date": datetime.date.today().isoformat(),
            "wall_s": round(wall_s), "machines": _machines(sweep_dir),
            "search": {k: summary.get(k) for k in ("objective", "methods", "best", "trials", "status_counts")},
            "confirmation": confirmation}


def record_seeds(name: str, files: list[Path], labels: list[str], commands: list[str]) -> dict:
    """Per-seed final validation accuracy of ``builtin_learning.py --out`` files, one per setting
    (each with the command that made it)."""
    settings = []
    for f, label, command in zip(files, labels, commands, strict=True):
        rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        last = {(r["variant"], r["seed"]): r["final"] for r in rows}  # a seed run again: its last result
        by_variant: dict[str, list] = {}
        for (variant, seed), final in sorted(last.items(), key=lambda kv: kv[0][1]):
            by_variant.setdefault(variant, []).append([seed, final])
        settings.append({"label": label, "command": command, "steps": rows[0]["steps"], "variants": by_variant})
    return {"kind": "seeds", "name": name, "date": datetime.date.today().isoformat(), "settings": settings}


def record_session(name: str, commands: list[str], cwd: Path, stdout_only: bool = False) -> dict:
    """Shell commands run one after the other in ``cwd``, each with what it printed (``stdout_only``:
    leave out standard error, where libraries log)."""
    import subprocess

    steps = []
    for cmd in commands:
        r = subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"`{cmd}` exited {r.returncode}: {r.stderr.strip()[-500:]}")
        steps.append({"command": cmd, "output": (r.stdout + ("" if stdout_only else r.stderr)).rstrip("\n")})
    return {"kind": "session", "name": name, "date": datetime.date.today().isoformat(), "steps": steps}


# --- rendering

def _minutes(s: float) -> str:
    return f"{int(s // 60)} min {int(s % 60)} s" if s >= 60 else f"{int(s)} s"


def render(record: dict, arms_only: bool = False) -> str:
    """The markdown a record stands for (the console's own lines where the console printed them)."""
    if record["kind"] == "seeds":
        return _render_seeds(record)
    if record["kind"] == "session":
        body = "\n".join(f"$ {st['command']}\n{st['output']}".rstrip() for st in record["steps"])
        return f"```console\n{body}\n```\n"
    style = record.get("style", "console")
    return _render_console(record) if style == "console" else _render_table(record, arms_only)


def _provenance(record: dict) -> str:
    where = "; ".join(record.get("machines", [])) or "machine not recorded"
    took = f", {_minutes(record['wall_s'])}" if record.get("wall_s") else ""
    return f"`{record['command']}` ({record['date']}{took}; {where})"


def _render_console(record: dict) -> str:
    from mmi_ray.sweep.confirm import headline_lines
    from mmi_ray.sweep.summary import methods_lines

    search = record["search"]
    lines = methods_lines(search)
    if record.get("confirmation"):
        lines += [""] + headline_lines(record["confirmation"], search["objective"]["metric"],
                                       search["objective"].get("mode", "max"))
    return f"Closing lines of {_provenance(record)}:\n\n```text\n" + "\n".join(lines) + "\n```\n"


def _render_table(record: dict, arms_only: bool = False) -> str:

    from mmi_ray.model_card import arm_table_lines
    from mmi_ray.results.stats import arm_comparisons, arm_table, confirmation_runs

    conf = record["confirmation"]
    runs = confirmation_runs(conf)
    metric = record["search"]["objective"]["metric"]
    out = [f"{_provenance(record)}; confirmation runs on fresh seeds {conf['seeds']}, each scored on "
           f"{int(runs['val_n'].max())} validation and {int(runs['test_n'].max())} test questions, test read once:", "",
           *arm_table_lines(arm_table(runs, metric, mode=record["search"]["objective"].get("mode", "max")), with_sd=True)]
    if arms_only:
        return "\n".join(out) + "\n"
    out += ["", "Paired by seed on test (one family, Holm-corrected):", "",
            "| comparison | difference, points [95% t] | d_z | p (Holm) |", "| --- | --- | --- | --- |"]
    methods = dict(zip(runs["arm"], runs["method"]))
    for r in arm_comparisons(runs, "test_accuracy").itertuples():
        out.append(f"| {methods[r.arm]} - {r.baseline} | {100 * r.mean_diff:+.1f} [{100 * r.ci_low:+.1f}, "
                   f"{100 * r.ci_high:+.1f}] | {r.effect_dz:.2f} | {r.p_holm:.2g} |")
    return "\n".join(out) + "\n"


def _render_seeds(record: dict) -> str:
    names = {"label": "label-only", "dss": "DSS", "mi": "MI (maxpool)", "infonce": "MI (infonce)"}
    out = [f"Validation accuracy at the last step, one run per seed ({record['date']}):", ""]
    out += [f"- {s['label']}: `{s['command']}`" for s in record["settings"]]
    out += ["", "| setting | method | n seeds | mean % | sd (points) | min - max % |", "| --- | --- | --- | --- | --- | --- |"]
    for s in record["settings"]:
        for variant, pairs in s["variants"].items():
            xs = [100 * v for _, v in pairs]
            sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
            out.append(f"| {s['label']} | {names.get(variant, variant)} | {len(xs)} | {statistics.mean(xs):.1f} | "
                       f"{sd:.1f} | {min(xs):.1f} - {max(xs):.1f} |")
    return "\n".join(out) + "\n"


def load_records() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))}


def rendered(text: str, records: dict[str, dict], source: str) -> str:
    """``text`` with every marked block re-rendered from its record."""
    def sub(m: re.Match) -> str:
        name, _, part = m.group("name").partition(":")
        if name not in records:
            raise SystemExit(f"{source}: block 'figures: {name}' has no record {RECORDS / (name + '.json')}")
        return m.group(1) + render(records[name], arms_only=part == "arms") + m.group(4)

    return BLOCK.sub(sub, text)


def stale_blocks(files: list[Path] | None = None) -> list[str]:
    """The files whose marked blocks differ from what their records render."""
    records = load_records()
    return [str(f.relative_to(REPO)) for f in files or FILES
            if f.exists() and rendered(f.read_text(), records, str(f)) != f.read_text()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rs = sub.add_parser("record-sweep", help="record a finished sweep folder's figures")
    rs.add_argument("name")
    rs.add_argument("sweep_dir", type=Path)
    rs.add_argument("--command", required=True, help="the command that ran the sweep, as the docs show it")
    rs.add_argument("--wall-s", type=float, default=0.0, help="its wall time (time ...), seconds")
    rs.add_argument("--style", choices=["console", "table"], default="console")
    rd = sub.add_parser("record-seeds", help="record builtin_learning.py --out files, one per setting")
    rd.add_argument("name")
    rd.add_argument("files", type=Path, nargs="+")
    rd.add_argument("--labels", nargs="+", required=True)
    rd.add_argument("--commands", nargs="+", required=True, help="the command that made each file")
    se = sub.add_parser("record-session", help="run shell commands and record what each printed")
    se.add_argument("name")
    se.add_argument("commands", nargs="+")
    se.add_argument("--stdout-only", action="store_true", help="record standard output alone (libraries log to stderr)")
    sub.add_parser("write", help="re-render every marked block of the README and docs/ from the records")
    sub.add_parser("check", help="exit 1 if a marked block differs from its record's rendering")
    args = ap.parse_args(argv)
    if args.cmd in ("record-sweep", "record-seeds", "record-session"):
        if args.cmd == "record-sweep":
            rec = record_sweep(args.name, args.sweep_dir, args.command, args.wall_s)
            rec["style"] = args.style
        elif args.cmd == "record-session":
            rec = record_session(args.name, args.commands, REPO, args.stdout_only)
        else:
            rec = record_seeds(args.name, args.files, args.labels, args.commands)
        RECORDS.mkdir(parents=True, exist_ok=True)
        (RECORDS / f"{args.name}.json").write_text(json.dumps(rec, indent=1) + "\n")
        print(render(rec))
        return 0
    if args.cmd == "write":
        records = load_records()
        for f in FILES:
            if f.exists():
                f.write_text(rendered(f.read_text(), records, str(f)))
        return 0
    stale = stale_blocks()
    for f in stale:
        print(f"{f}: a figures block differs from its record (python tools/readme_figures.py write)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
