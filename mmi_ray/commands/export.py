"""``mmi-ray export``: a trained student as a transformers folder with a model card (and to the Hub)."""

from __future__ import annotations

from ..layout import EXPORT_SOURCES


def register(sub) -> None:
    p = sub.add_parser("export", help="a trained student as a transformers folder with a model card (and to the Hub)")
    p.add_argument("source", help=EXPORT_SOURCES)
    p.add_argument("--out", required=True, help="the folder to write (refused if it exists and is not empty)")
    p.add_argument("--arm", default=None, help="a confirmation arm by its name (DSS, MI-maxpool, ...); default: the "
                   "one ranked first on validation")
    p.add_argument("--seed", type=int, default=None, help="the arm's seed run; default: the one closest to the arm's mean")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--merge", action="store_true", help="a LoRA student: write the student with its adapters merged "
                   "in (a plain transformers folder); default: the adapter folder (peft)")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="also upload it (huggingface_hub; token "
                   "from HF_TOKEN or hf auth login)")
    p.set_defaults(fn=run)


def run(args) -> int:
    from ..publish import export_student

    chosen, out = export_student(args.source, args.out, args.arm, args.seed, args.force, args.push_to_hub, args.merge)
    for line in chosen.why:
        print(f"[mmi-ray] {line.replace('**', '').replace('`', '')}")
    print(f"[mmi-ray] exported: {out} (model card: {out / 'README.md'})")
    if args.push_to_hub:
        print(f"[mmi-ray] pushed to the Hub: {args.push_to_hub}")
    return 0
