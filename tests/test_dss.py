import json

import pytest

from mmi_ray.config import DataConfig
from mmi_ray.data import load_splits
from mmi_ray.data.dss import load_dss_split, parse_anli, parse_cqa, parse_esnli, parse_svamp
from mmi_ray.errors import DataError
from mmi_ray.metrics import label_correct


def _acc(split):
    return sum(label_correct(e.teacher_label, e.label, e.kind) for e in split.examples) / len(split)


@pytest.mark.parametrize("name,split,rows,acc", [("cqa", "test", 1221, 77.23), ("svamp", "test", 200, 74.00),
                                                 ("anli1", "test", 1000, 65.60)])
def test_teacher_accuracy_on_real_files_matches_reference(dss_dir, name, split, rows, acc):
    sp = load_dss_split(name, dss_dir, split)
    assert len(sp) == rows
    assert round(100 * _acc(sp), 2) == acc


def test_cqa_input_and_label_layout(dss_dir):
    ex = load_dss_split("cqa", dss_dir, "test").examples[0]
    assert ex.input.startswith("A beaver is know for building prowess")
    assert "\nAnswer Choices:\n(a) british columbia\n(b) body of water" in ex.input
    assert ex.label == "wooded area" and ex.teacher_label == "wooded area"
    assert ex.rationale.endswith("only wooded areas have the supplies that beavers need.")
    assert "Q:" not in ex.rationale


def test_valid_is_carved_from_train_with_its_own_seed(dss_dir):
    a = load_splits(DataConfig(dataset="svamp", data_dir=str(dss_dir), split_seed=0))
    b = load_splits(DataConfig(dataset="svamp", data_dir=str(dss_dir), split_seed=1))
    assert len(a.train) == 720 and len(a.valid) == 80 and len(a.test) == 200
    assert {e.input for e in a.valid.examples} != {e.input for e in b.valid.examples}
    assert not {e.input for e in a.valid.examples} & {e.input for e in a.train.examples}


def test_parsers_cut_the_invented_next_example():
    r, y = parse_cqa("Beavers use wood. So the answer is (c) wooded area.\n\nQ: next? So the answer is (a) x.")
    assert (r, y) == ("Beavers use wood.", "wooded area")
    r, y = parse_svamp("10 * 45 is 450. The answer is (10 * 45).\n\nQ: The answer is (1 + 1).")
    assert (r, y) == ("10 * 45 is 450.", "(10 * 45)")
    r, y = parse_anli("It is in London. So the answer is contradiction.\n\nPremise: a\nHypothesis: b")
    assert (r, y) == ("It is in London.", "contradiction")
    r, y = parse_esnli("A man sleeps.\nAnswer: neutral\n\nPremise: x")
    assert (r, y) == ("A man sleeps.", "neutral")


@pytest.mark.parametrize("fn,text", [(parse_cqa, "no answer marker here"), (parse_cqa, "x So the answer is"),
                                     (parse_svamp, "The answer is 12"), (parse_anli, "rambling"),
                                     (parse_esnli, "no answer")])
def test_unparseable_teacher_output_is_empty_not_a_crash(fn, text):
    assert fn(text) == ("", "")


def _write_cqa(root, rows, outputs, chunk_files=None):
    d = root / "cqa"
    (d / "llm").mkdir(parents=True)
    (d / "cqa_train.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (d / "llm" / "train_CoT_0.json").write_text(json.dumps(outputs))
    return d


ROW = {"id": "1", "question": "Q?", "choices": ["a", "b", "c", "d", "e"], "answer": "b",
       "abstractive_explanation": "", "extractive_explanation": ""}


def test_line_count_mismatch_names_the_files(tmp_path):
    _write_cqa(tmp_path, [ROW, ROW], ["r. So the answer is (b) b."])
    with pytest.raises(DataError, match=r"train_CoT_\*\.json: 1 teacher outputs for 2 rows in cqa_train.json"):
        load_dss_split("cqa", tmp_path, "train")


def test_invalid_json_line_named(tmp_path):
    d = _write_cqa(tmp_path, [ROW], ["r. So the answer is (b) b."])
    (d / "cqa_train.json").write_text(json.dumps(ROW) + "\n{not json\n")
    with pytest.raises(DataError, match=r"cqa_train.json: line 2, column \d+: invalid JSON"):
        load_dss_split("cqa", tmp_path, "train")


def test_missing_key_named(tmp_path):
    row = dict(ROW)
    del row["answer"]
    _write_cqa(tmp_path, [row], ["r. So the answer is (b) b."])
    with pytest.raises(DataError, match=r"cqa_train.json: line 1: missing or invalid key 'answer'"):
        load_dss_split("cqa", tmp_path, "train")


def test_non_utf8_named(tmp_path):
    d = _write_cqa(tmp_path, [ROW], ["r. So the answer is (b) b."])
    (d / "cqa_train.json").write_bytes(json.dumps(ROW).encode() + b"\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"line 2: not UTF-8"):
        load_dss_split("cqa", tmp_path, "train")


def test_empty_split_named(tmp_path):
    d = _write_cqa(tmp_path, [ROW], [])
    (d / "cqa_train.json").write_text("")
    with pytest.raises(DataError, match=r"cqa_train.json: empty split"):
        load_dss_split("cqa", tmp_path, "train")
