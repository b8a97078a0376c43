"""Your own rows as a dataset (``data.dataset: custom``): JSONL, CSV, split files, a ``datasets``
folder; the four label kinds; splits given or carved (validation never from test); bad input is one
line naming the file, the line and the key, with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmi_ray.cli import main
from mmi_ray.commands.data import data_config
from mmi_ray.config import load_config
from mmi_ray.data import load_splits
from mmi_ray.errors import ConfigError, DataError, ModelError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def test_a_csv_with_a_split_column_and_mapped_columns(tmp_path):
    f = write(tmp_path / "qa.csv", "q,a,why,split\n"
              "2 + 2?,4,two and two,train\n3 + 4?,7,three and four,train\n1 + 1?,2,one and one,train\n"
              "5 + 5?,10.0,,valid\n6 + 1?,\"1,000\",,test\n")
    s = load_splits(data_config(str(f), ["custom.label_kind=number", "custom.columns.input=q", "custom.columns.label=a",
                                         "custom.columns.rationale=why"]))
    assert [e.input for e in s.train.examples] == ["2 + 2?", "3 + 4?", "1 + 1?"]
    assert [e.label for e in s.valid.examples + s.test.examples] == ["10", "1000"]
    e = s.train.examples[0]
    assert e.rationale == "two and two" and e.teacher_label == "4" and e.kind == "equation"
    assert s.valid.examples[0].rationale == "" and s.valid.unparsed == 1


def test_choice_rows_get_the_options_in_the_input_and_letters_name_options(tmp_path):
    f = jsonl(tmp_path / "train.jsonl", [
        {"input": "Where do fish live?", "choices": ["desert", "water", "sky"], "label": "(b)"},
        {"input": "What is cold?", "choices": "ice | fire", "label": "ice", "rationale": "Ice is frozen.",
         "teacher_answer": "b"}])
    s = load_splits(data_config(str(f.parent), ["custom.label_kind=choice", "valid_fraction=0.5"]))
    ex = s.train.examples + s.valid.examples
    fish = next(e for e in ex if e.input.startswith("Where"))
    assert fish.input == "Where do fish live?\nAnswer Choices:\n(a) desert\n(b) water\n(c) sky" and fish.label == "water"
    cold = next(e for e in ex if e.input.startswith("What"))
    assert cold.teacher_label == "fire" and cold.rationale == "Ice is frozen."


def test_teacher_answers_are_read_as_people_write_them_and_a_wrong_one_is_kept_as_wrong(tmp_path):
    """A teacher's "(c) Wooded area" or "**sky**" is the option it names; an answer that is no option
    is kept (a wrong answer, counted so), not an error; a gold label that is no option still is."""
    from mmi_ray.metrics import label_correct

    f = jsonl(tmp_path / "train.jsonl", [
        {"input": "Where do beavers build?", "choices": ["zoo", "sky", "wooded area"], "label": "wooded area",
         "rationale": "Beavers need trees.", "teacher_answer": "(c) Wooded area"},
        {"input": "What is up?", "choices": ["sky", "ground"], "label": "sky", "rationale": "Up there.",
         "teacher_answer": "**Sky**"},
        {"input": "What is down?", "choices": ["sky", "ground"], "label": "ground", "rationale": "Below.",
         "teacher_answer": "the basement"}])
    s = load_splits(data_config(str(f.parent), ["custom.label_kind=choice", "valid_fraction=0.34"]))
    ex = {e.input.split("\n")[0]: e for e in s.train.examples + s.valid.examples}
    assert ex["Where do beavers build?"].teacher_label == "wooded area" and ex["What is up?"].teacher_label == "sky"
    down = ex["What is down?"]
    assert down.teacher_label == "the basement" and not label_correct(down.teacher_label, down.label, down.kind, down.input)
    assert all(e.kind == "answer" for e in ex.values())
    jsonl(tmp_path / "bad" / "train.jsonl", [{"input": "q", "choices": ["a1", "a2"], "label": "a3"}] * 4)
    with pytest.raises(DataError, match="label 'a3' is not one of the row's choices"):
        load_splits(data_config(str(tmp_path / "bad"), ["custom.label_kind=choice"]))


def test_class_labels_and_label_names(tmp_path):
    f = jsonl(tmp_path / "nli" / "nli_train.json", [{"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0},
                                                    {"premise": "A cat.", "hypothesis": "A car.", "label": 2}] * 3)
    jsonl(tmp_path / "nli" / "nli_dev.json", [{"premise": "P.", "hypothesis": "H.", "label": 1}])
    s = load_splits(data_config(str(f.parent), [
        "custom.label_kind=class", "custom.classes=[entailment, neutral, contradiction]",
        "custom.input_template={premise} </s> {hypothesis}", "custom.label_names={0: entailment, 1: neutral, 2: contradiction}"]))
    assert s.train.examples[0].input == "A dog runs. </s> An animal moves." and s.train.examples[0].label == "entailment"
    assert s.valid.examples[0].label == "neutral" and s.test is None
    assert any("no test split" in n for n in s.notes)


def test_validation_is_carved_from_train_never_from_test_and_test_fraction_carves_a_test(tmp_path):
    rows = [{"input": f"q{i}", "label": f"a{i}"} for i in range(40)]
    jsonl(tmp_path / "d" / "train.jsonl", rows)
    jsonl(tmp_path / "d" / "test.jsonl", [{"input": "t1", "label": "x"}, {"input": "t2", "label": "y"}])
    s = load_splits(data_config(str(tmp_path / "d"), ["valid_fraction=0.25"]))
    assert len(s.valid) == 10 and len(s.train) == 30 and [e.input for e in s.test.examples] == ["t1", "t2"]
    assert not {e.input for e in s.valid.examples} & {"t1", "t2"}
    one = jsonl(tmp_path / "all.jsonl", rows)
    s = load_splits(data_config(str(one), ["custom.test_fraction=0.1", "valid_fraction=0.1"]))
    assert (len(s.train), len(s.valid), len(s.test)) == (32, 4, 4)
    seen = [e.input for sp in (s.train, s.valid, s.test) for e in sp.examples]
    assert sorted(seen) == sorted(r["input"] for r in rows)  # a partition: nothing twice, nothing lost
    again = load_splits(data_config(str(one), ["custom.test_fraction=0.1", "valid_fraction=0.1"]))
    assert [e.input for e in again.test.examples] == [e.input for e in s.test.examples]  # seeded


def test_a_datasets_folder_is_read_with_its_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"question": f"q{i}", "answer": "yes" if i % 2 else "no"} for i in range(8)]),
        "validation": datasets.Dataset.from_list([{"question": "v", "answer": "no"}]),
        "test": datasets.Dataset.from_list([{"question": "t", "answer": "yes"}])})
    dd.save_to_disk(str(tmp_path / "ds"))
    s = load_splits(data_config(str(tmp_path / "ds"), ["custom.columns.input=question", "custom.columns.label=answer",
                                                        "custom.label_kind=class", "custom.classes=['yes', 'no']"]))
    assert (len(s.train), len(s.valid), len(s.test)) == (8, 1, 1) and s.valid.examples[0].input == "v"


@pytest.mark.parametrize("content,settings,problem", [
    ("question,answer,split\nq,a,train\nr,b,valid\n", ["custom.columns.input=text"],
     "qa.csv: line 2: missing or empty key 'text' (data.custom.columns.input; the row has: question, answer, split)"),
    ("input,label,split\nq,yes,train\nr,maybe,valid\n", ["custom.label_kind=class", "custom.classes=['yes', 'no']"],
     "qa.csv: line 3: label 'maybe' is not one of data.custom.classes"),
    ("input,label,split\nq,1,train\nr,many,valid\n", ["custom.label_kind=number"],
     "qa.csv: line 3: 'label' is not a number (got 'many')"),
    ("input,label,choices,split\nq,c,a|b,train\nr,a,a|b,valid\n", ["custom.label_kind=choice"],
     "qa.csv: line 2: label 'c' is not one of the row's choices"),
    ("input,label,split\nq,a,train\nr,b,holdout\n", [], "qa.csv: line 3: split 'holdout' is not train, valid or test"),
    ("input,label,split\nq,a,valid\n", [], "no train split"),
    ("input,label\nq,a\n", ["custom.label_kind=class"], "data: custom.classes: label_kind 'class' needs the closed set"),
    ("input,label\nq,yes\n", ["custom.label_kind=class", "custom.classes=[yes, no]"], "quote the labels, e.g. ['yes', 'no']"),
    ("input,label\nq,a\n", [], "1 training rows are too few to carve a validation split"),
])
def test_bad_rows_are_one_line_naming_the_file_line_and_key(tmp_path, capsys, content, settings, problem):
    f = write(tmp_path / "qa.csv", content)
    rc = main(["data", str(f), *settings])
    err = capsys.readouterr().err
    assert rc == 2 and problem in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("name,content", [("valid.jsonl", ""), ("valid.jsonl", "\n\n"), ("valid.csv", ""),
                                          ("valid.csv", "input,label\n")])
def test_an_empty_split_file_is_named_the_same_way_in_every_format(tmp_path, capsys, name, content):
    """An empty CSV, an empty JSONL and a split with no rows (blank lines, a header alone): one message."""
    jsonl(tmp_path / "d" / "train.jsonl", [{"input": "q", "label": "a"}] * 5)
    write(tmp_path / "d" / name, content)
    with pytest.raises(DataError, match="no rows"):
        load_splits(data_config(str(tmp_path / "d"), []))
    assert main(["data", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'd' / name}: no rows (the file is empty" in err and len(err.strip().splitlines()) == 1


def test_a_broken_json_line_names_its_line_and_column(tmp_path):
    write(tmp_path / "rows.jsonl", '{"input": "q", "label": "a"}\n{"input": "r" "label": "b"}\n')
    with pytest.raises(DataError, match=r"rows.jsonl: line 2, column 15: invalid JSON \(Expecting ','"):
        load_splits(data_config(str(tmp_path / "rows.jsonl"), []))


def test_a_folder_left_by_a_stopped_rationales_run_is_not_complete_not_missing(tmp_path, capsys):
    """What a run refused at its first request (HTTP 401) leaves: rationales.json saying not complete,
    no split file. ``mmi-ray data`` says "not complete" and how to finish."""
    d = tmp_path / "out"
    write(d / "rationales.json", json.dumps({"format": 1, "complete": False, "splits": {}}))
    assert main(["data", str(d)]) == 2
    err = capsys.readouterr().err
    assert "the rationales are not complete" in err and "run the same mmi-ray rationales command again" in err
    assert "no split files" not in err


def test_config_keys_for_custom_data_are_checked_up_front(tmp_path):
    with pytest.raises(ConfigError, match="data: path is required for dataset 'custom'"):
        load_config(REPO / "configs/tiny_props.yaml", ["data.dataset=custom"])
    with pytest.raises(ConfigError, match="data.custom.label_kind"):
        load_config(REPO / "configs/tiny_props.yaml", ["data.dataset=custom", "data.path=x.csv", "data.custom.label_kind=essay"])
    with pytest.raises(ConfigError, match="path is read for dataset 'custom' only"):
        load_config(REPO / "configs/tiny_props.yaml", ["data.path=x.csv"])
    cfg = load_config(REPO / "configs/tiny_props.yaml", ["data.dataset=custom", "data.path=rel/x.csv"])
    assert Path(cfg.data.path).is_absolute()  # made absolute on the driver, as data_dir is


def test_the_words_tokenizer_on_custom_data_names_words_it_does_not_know(tmp_path):
    from mmi_ray.model import check_vocabulary

    f = write(tmp_path / "qa.csv", "input,label\nbox DS: what color?,blue\nbox KS: zebra?,no\nbox AB: big or not?,no\n")
    cfg = load_config(REPO / "configs/tiny_props.yaml", ["data.dataset=custom", f"data.path={f}", "data.valid_fraction=0.34"])
    with pytest.raises(ModelError, match=r"'zebra' \((train|valid) row \d\)"):
        check_vocabulary(cfg, load_splits(cfg.data), "c.yaml")


def test_data_without_rationales_reports_no_teacher_accuracy(capsys):
    assert main(["data", str(REPO / "examples/boxes.csv"), "custom.columns.input=question", "custom.columns.label=answer"]) == 0
    out = capsys.readouterr().out
    assert "train      4000      4000            -" in out and "0.00%" not in out
    assert "no rationales yet" in out


def test_rationales_keep_correct_drops_rows_the_teacher_got_wrong_and_relabel_trains_them_on_gold(tmp_path, capsys):
    """On the built-in task with a teacher wrong on 30% of rows: ``keep: correct`` drops exactly the
    rows whose teacher answer is not gold (validation untouched) and says how many; ``relabel`` keeps
    every row and its rationale, the teacher-label task then trains on gold; ``mmi-ray data`` counts it."""
    from mmi_ray.config import load_config
    from mmi_ray.metrics import label_correct

    base = ["data.builtin.teacher_error_rate=0.3", "data.builtin.num_train=200"]
    cfg = lambda *ov: load_config(REPO / "configs" / "tiny_builtin.yaml", [*base, *ov]).data  # noqa: E731
    every = load_splits(cfg())
    wrong = [e for e in every.train.examples
             if not (e.parsed and label_correct(e.teacher_label, e.label, e.kind, e.input))]
    assert 20 < len(wrong) < 100 and every.kept is None
    correct = load_splits(cfg("data.rationales.keep=correct"))
    assert len(correct.train) == len(every.train) - len(wrong)
    assert all(label_correct(e.teacher_label, e.label, e.kind, e.input) for e in correct.train.examples)
    assert correct.valid.examples == every.valid.examples
    assert f"{len(wrong)} of {len(every.train)} rows dropped" in correct.kept
    relabel = load_splits(cfg("data.rationales.keep=relabel", "data.label_type=teacher"))
    assert [e.rationale for e in relabel.train.examples] == [e.rationale for e in every.train.examples if e.parsed]
    assert all(e.teacher_label == e.label for e in relabel.train.examples)
    # label_only: every row kept; the wrong ones train the label task alone (on gold), the rest both
    only = load_splits(cfg("data.rationales.keep=label_only"))
    assert len(only.train) == len(every.train) and only.valid.examples == every.valid.examples
    assert [not e.teaches_rationale for e in only.train.examples] == [e in wrong for e in every.train.examples]
    assert all(e.teacher_label == e.label for e in only.train.examples if e.parsed and not e.teaches_rationale)
    assert f"{len(wrong)} of {len(every.train)} rows train the label task only" in only.kept
    from mmi_ray.data.batching import Prompts, collate, tokenize
    from mmi_ray.model import build_tokenizer

    tok = build_tokenizer(load_config(REPO / "configs" / "tiny_builtin.yaml").model)
    t = tokenize(only.train.examples, Prompts(tok), 128, 64)
    first = next(i for i, e in enumerate(only.train.examples) if not e.teaches_rationale)
    idx = list(range(first, first + 8))
    assert collate(t, idx, 0)["rationale_rows"].tolist() == [only.train.examples[i].teaches_rationale for i in idx]
    fine = [i for i, e in enumerate(only.train.examples) if e.teaches_rationale][:8]
    assert "rationale_rows" not in collate(t, fine, 0)  # a batch whose rows all have theirs: as before
    assert tokenize(every.train.examples, Prompts(tok), 128, 64).has_rationale is None
    with pytest.raises(ConfigError, match="data.rationales.keep"):
        load_config(REPO / "configs" / "tiny_builtin.yaml", ["data.rationales.keep=some"])


def test_the_data_command_counts_what_rationales_keep_drops(tmp_path, capsys):
    rows = [{"input": f"q{i}", "label": "yes" if i % 2 else "no", "rationale": f"because {i}",
             "teacher_answer": "Yes." if i % 3 else "no"} for i in range(30)]
    f = jsonl(tmp_path / "d" / "rows.jsonl", rows)
    assert main(["data", str(f), "rationales.keep=correct", "valid_fraction=0.2"]) == 0
    out = capsys.readouterr().out
    # "Yes." matches "yes" once normalised; the train rows (24 of 30) whose teacher answer differs are counted
    assert "rows dropped, their teacher answer wrong or unparsed (data.rationales.keep: correct)" in out
