"""``mmi-ray predict``: a student on new inputs (mmi_ray/predict.py)."""

from __future__ import annotations

from ..layout import MODEL_SOURCES


def register(sub) -> None:
    p = sub.add_parser("predict", help="run a student on new inputs (JSONL with an 'input' field, or text lines)")
    p.add_argument("model", help=MODEL_SOURCES)
    p.add_argument("--input", default="-", help="a .jsonl or text file, or - for standard input (default)")
    p.add_argument("--explain", action="store_true", help="also generate each rationale (explain: prefix)")
    p.add_argument("--batch", type=int, default=32, help="inputs per generation batch")
    p.add_argument("--out", default=None, help="write JSONL here (default: standard output)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: a GPU when there is one)")
    p.set_defaults(fn=run)


def run(args) -> int:
    from ..predict import run_predict

    return run_predict(args.model, args.input, args.explain, args.batch, args.out, args.device)
