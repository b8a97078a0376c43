"""``mmi-ray table``: the paper table, datasets x methods from confirmation runs (mmi_ray/analysis/table.py)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("table", help="the paper table: datasets x methods from confirmation runs (Markdown, LaTeX)")
    p.add_argument("results", nargs="+", help="sweep folders with confirmation runs")
    p.add_argument("--format", choices=["markdown", "latex", "both"], default="markdown",
                   help="Markdown, LaTeX (booktabs) or both (default: markdown)")
    p.add_argument("--out", default=None, help="also write the table(s) here (FILE.md / FILE.tex)")
    p.set_defaults(fn=run)


def run(args) -> int:
    from pathlib import Path

    from ..analysis.table import table_rows, to_latex, to_markdown

    rows = table_rows(args.results)
    texts = {}
    if args.format in ("markdown", "both"):
        texts["md"] = to_markdown(rows)
    if args.format in ("latex", "both"):
        texts["tex"] = to_latex(rows)
    print("\n".join(texts.values()), end="")
    if args.out:
        stem = Path(args.out)
        for ext, text in texts.items():
            target = stem.with_suffix(f".{ext}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            print(f"[mmi-ray] table: {target}")
    return 0
