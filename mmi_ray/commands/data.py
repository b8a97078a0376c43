"""``mmi-ray data``: a dataset as the trainer reads it (a DSS dataset, or your own rows): rows,
parse failures and the teacher's accuracy per split."""

from __future__ import annotations

from ..config import DSS_NAMES
from . import shown

DATA_HELP = ("dotted key=value settings of the data section, e.g. custom.label_kind=number "
             "custom.columns.input=question (the keys of a config's data: section; data. prefix optional)")


def register(sub) -> None:
    p = sub.add_parser("data", help="load a dataset (DSS or your own) and report rows, parse failures, teacher accuracy")
    p.add_argument("name", help=f"a DSS dataset ({', '.join(DSS_NAMES)}) with --data-dir, or a custom dataset's path")
    p.add_argument("settings", nargs="*", help="custom data: " + DATA_HELP)
    p.add_argument("--data-dir", default=None, help="the DSS datasets/ folder")
    p.set_defaults(fn=run)


def run(args) -> int:
    from ..errors import MmiError

    if args.name not in DSS_NAMES or args.settings:
        if args.data_dir:
            raise MmiError(f"--data-dir is for the DSS datasets ({', '.join(DSS_NAMES)}); '{args.name}' is read as a custom dataset")
        return custom_report(args.name, args.settings)
    if not args.data_dir:
        raise MmiError(f"{args.name}: --data-dir (the DSS datasets/ folder) is required for a DSS dataset")
    return dss_report(args.name, args.data_dir)


def dss_report(name: str, data_dir: str) -> int:
    from pathlib import Path

    from ..data.dss import DSS_DATASETS, available_splits, load_dss_split
    from ..errors import DataError
    from ..metrics import label_correct

    root = Path(data_dir).expanduser() / name
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (--data-dir must hold the DSS '{name}' folder)")
    have = available_splits(name, data_dir)
    if not have:
        raise DataError(f"{root}: no {name}_{{train,valid,test}}.json files")
    print(f"{name}: {root}")
    print(f"{'split':<7} {'rows':>7} {'unparsed':>9} {'teacher acc':>12}")
    for split in have:
        sp = load_dss_split(name, data_dir, split)
        acc = sum(label_correct(e.teacher_label, e.label, e.kind, e.input) for e in sp.examples) / len(sp)
        print(f"{split:<7} {len(sp):>7} {sp.unparsed:>9} {100 * acc:>11.2f}%")
    if "valid" not in DSS_DATASETS[name].splits:
        print("note: no validation split; training carves data.valid_fraction of train off with data.split_seed")
    return 0


def data_config(path: str, settings: list[str], source: str = "command line"):
    """A ``DataConfig`` for ``dataset: custom`` at ``path`` with the given ``key=value`` settings."""
    from pydantic import ValidationError

    from ..config import DataConfig, apply_overrides, format_validation_error, resolve_paths
    from ..errors import ConfigError

    keys = [s[len("data."):] if s.startswith("data.") else s for s in settings]
    raw = resolve_paths({"data": apply_overrides({"dataset": "custom", "path": path}, keys)})["data"]
    try:
        return DataConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(source, format_validation_error(e, "data")) from None


def custom_report(path: str, settings: list[str]) -> int:
    """``mmi-ray data PATH [key=value ...]``: a custom dataset as the trainer reads it."""
    from ..data.custom import custom_splits, read_table
    from ..metrics import label_correct

    data = data_config(path, settings)
    table = read_table(data.path, data.custom.columns.split)
    splits, meta = custom_splits(data, table), table.meta
    print(f"custom: {shown(data.path)}")
    if meta:
        t = meta["teacher"]
        print(f"rationales: teacher {t['model']} ({t['backend']}), prompt {meta['prompt']['name']} "
              f"({meta['prompt']['sha']}), rows hash {meta['rows_sha']}")
    print(f"{'split':<7} {'rows':>7} {'unparsed':>9} {'teacher acc':>12}")
    for name, sp in splits.items():
        judged = [e for e in sp.examples if e.gold]  # a teacher-labelled row says nothing of the teacher
        acc = sum(e.parsed and label_correct(e.teacher_label, e.label, e.kind, e.input) for e in judged) / max(len(judged), 1)
        shown_acc = f"{100 * acc:>11.2f}%" if sp.unparsed < len(sp) else f"{'-':>12}"
        print(f"{name:<7} {len(sp):>7} {sp.unparsed:>9} {shown_acc}")
    from ..data import keep_rows

    _, kept = keep_rows(splits.train, data.rationales.keep)
    for note in [*splits.notes, *filter(None, [kept])]:
        print(f"note: {note}")
    if all(sp.unparsed == len(sp) for _, sp in splits.items()):
        print("note: no rationales yet (label-only training); mmi-ray rationales writes them")
    return 0
