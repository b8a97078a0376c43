"""Data sources -> ``Splits`` of ``Example``s: the DSS datasets (local files or hub) or the built-in task."""

from __future__ import annotations

from dataclasses import replace

from ..config import DataConfig
from ..errors import DataError
from .builtin import builtin_splits
from .custom import custom_splits
from .dss import DSS_DATASETS, available_splits, load_dss_split, load_hub_split
from .examples import Example, SplitData, Splits, carve

__all__ = ["Example", "SplitData", "Splits", "load_splits", "keep_rows", "carve_valid", "DSS_DATASETS"]


def carve_valid(train: SplitData, fraction: float, seed: int) -> tuple[SplitData, SplitData]:
    """Split a validation set off train with its own seed (for datasets that have none)."""
    kept, carved = carve(train.examples, fraction, seed, "validation", train.source)
    tr = SplitData("train", kept, sum(not e.parsed for e in kept), train.source)
    va = SplitData("valid", carved, sum(not e.parsed for e in carved), train.source + f" (carved, seed {seed})")
    return tr, va


def keep_rows(train: SplitData, keep: str) -> tuple[SplitData, str | None]:
    """Train as ``data.rationales.keep`` filters it, and the line that counts what it did (None for
    ``all``). A row's teacher answer is right when ``label_correct`` says so, as evaluation scores."""
    if keep == "all":
        return train, None
    if (n := sum(not e.gold for e in train.examples)):
        raise DataError(f"data.rationales.keep: {keep} needs gold labels to judge the teacher by, but {n} training "
                        f"rows of {train.source} are labelled by the teacher (data.custom.unlabelled: teacher)")
    from ..metrics import label_correct

    wrong = [not (e.parsed and label_correct(e.teacher_label, e.label, e.kind, e.input)) for e in train.examples]
    n_wrong = sum(wrong)
    if keep == "correct":
        kept = [e for e, w in zip(train.examples, wrong) if not w]
        if not kept:
            raise DataError(f"{train.source}: data.rationales.keep: correct leaves no training row (the teacher "
                            f"answered none of the {len(train)} rows right)")
        return (SplitData("train", kept, 0, train.source),
                f"train: {n_wrong} of {len(train)} rows dropped, their teacher answer wrong or unparsed "
                f"(data.rationales.keep: correct); {len(kept)} left")
    # relabel and label_only: a wrong teacher answer becomes the gold one, so a teacher-label task trains on gold
    out = [replace(e, teacher_label=e.label) if w and e.parsed else e for e, w in zip(train.examples, wrong)]
    if keep == "label_only":  # and such a row trains neither the rationale task nor the MI term
        out = [replace(e, teaches_rationale=False) if w else e for e, w in zip(out, wrong)]
        return (SplitData("train", out, train.unparsed, train.source),
                f"train: {n_wrong} of {len(train)} rows train the label task only, their teacher answer wrong or "
                f"unparsed (data.rationales.keep: label_only); {len(train) - n_wrong} train both tasks")
    n_relabelled = sum(w and e.parsed for e, w in zip(train.examples, wrong))
    return (SplitData("train", out, train.unparsed, train.source),
            f"train: {n_relabelled} of {len(train)} rows relabelled to gold, their teacher answer wrong, their "
            f"rationale kept (data.rationales.keep: relabel)")


def load_splits(cfg: DataConfig, need_train: bool = True) -> Splits:
    """Train / validation / test for the configured dataset. Test is loaded but never used for
    selection; validation is carved from train when the dataset has no validation split."""
    if cfg.dataset == "builtin":
        b = cfg.builtin
        splits = builtin_splits(b.num_train, b.num_valid, b.num_test, b.seed, list(b.tasks), b.teacher_error_rate,
                                b.max_operand, b.props_boxes, b.props_taught)
    elif cfg.dataset == "custom":
        splits = custom_splits(cfg)
    else:
        name = cfg.dataset
        if cfg.source == "hub":
            load = lambda s: load_hub_split(name, s)  # noqa: E731
            have = list(DSS_DATASETS[name].splits)
        else:
            load = lambda s: load_dss_split(name, cfg.data_dir, s)  # noqa: E731
            have = available_splits(name, cfg.data_dir)
        if "train" not in have:
            raise DataError(f"{cfg.data_dir}/{name}/{name}_train.json: file not found (data.data_dir)")
        train = load("train")
        test = load("test") if "test" in have else None
        notes = []
        if "valid" in have:
            valid = load("valid")
        else:
            train, valid = carve_valid(train, cfg.valid_fraction, cfg.split_seed)
            notes.append(f"validation: {len(valid)} rows carved from train with split_seed {cfg.split_seed}")
        splits = Splits(train, valid, test, notes)
    if cfg.max_train_examples is not None:
        t = splits.train
        splits.train = SplitData("train", t.examples[: cfg.max_train_examples], t.unparsed, t.source)
    if cfg.max_eval_examples is not None:
        v = splits.valid
        splits.valid = SplitData("valid", v.examples[: cfg.max_eval_examples], v.unparsed, v.source)
    if need_train:
        splits.train, splits.kept = keep_rows(splits.train, cfg.rationales.keep)
        if splits.kept:
            splits.notes.append(splits.kept)
    if need_train and cfg.label_type == "teacher":
        kept = [e for e in splits.train.examples if e.parsed]
        splits.train = SplitData("train", kept, 0, splits.train.source)
    for name, sp in splits.items():
        if len(sp) == 0:
            raise DataError(f"{sp.source or cfg.dataset}: the {name} split is empty")
    return splits
