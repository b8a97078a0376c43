from collections import Counter
from pathlib import Path

import pytest

from mmi_ray.config import ModelConfig
from mmi_ray.data.batching import BatchStream, Prompts, collate, epoch_batches, tokenize
from mmi_ray.data.builtin import builtin_splits, generate
from mmi_ray.metrics import label_correct
from mmi_ray.model import build_tokenizer


def test_generation_is_deterministic_and_splits_disjoint():
    a = builtin_splits(300, 50, 50, seed=3, tasks=["arith", "choice", "nli"], teacher_error_rate=0.2)
    b = builtin_splits(300, 50, 50, seed=3, tasks=["arith", "choice", "nli"], teacher_error_rate=0.2)
    assert a.train.examples == b.train.examples
    tr, va, te = ({e.input for e in s.examples} for s in (a.train, a.valid, a.test))
    assert not tr & va and not tr & te and not va & te
    assert Counter(e.task for e in a.train.examples) == {"arith": 100, "choice": 100, "nli": 100}
    assert {e.label for e in a.train.examples if e.task == "nli"} == {"entailment", "contradiction", "neutral"}


def test_a_faithful_teacher_is_always_right_and_a_noisy_one_is_not():
    clean = generate(600, 0, ["arith", "choice", "nli"], 0.0)
    assert all(label_correct(e.teacher_label, e.label, e.kind) for e in clean)
    assert all(e.teacher_label in e.rationale for e in clean)
    noisy = generate(600, 0, ["arith", "choice", "nli"], 0.3)
    wrong = sum(not label_correct(e.teacher_label, e.label, e.kind) for e in noisy) / len(noisy)
    assert 0.1 < wrong < 0.3  # a slip does not always change the label (e.g. a non-maximal sum)


def _tok(n=200):
    tk = build_tokenizer(ModelConfig())
    return tokenize(generate(n, 0, ["arith", "choice", "nli"], 0.0), Prompts(tk), 256, 128), tk


def test_stream_resumes_exactly_and_ranks_partition_each_step():
    tok, _ = _tok()
    full = BatchStream(tok, 8, seed=1, bucket=True, world=2, rank=0, accum=2)
    seq = [full.next_step() for _ in range(30)]  # crosses an epoch boundary (25 batches / 4 per step)
    resumed = BatchStream(tok, 8, seed=1, bucket=True, world=2, rank=0, accum=2)
    for _ in range(11):
        resumed.next_step()
    pos = resumed.position
    again = BatchStream(tok, 8, seed=1, bucket=True, world=2, rank=0, accum=2)
    again.seek(**pos)
    assert [again.next_step() for _ in range(19)] == seq[11:]
    other = BatchStream(tok, 8, seed=1, bucket=True, world=2, rank=1, accum=2)
    first0, first1 = seq[0], other.next_step()
    assert not {i for b in first0 for i in b} & {i for b in first1 for i in b}


def test_bucketing_cuts_padding():
    tok, tk = _tok(800)

    def pad_ratio(bucket):
        real = padded = 0
        for idx in epoch_batches(tok, 16, seed=0, epoch=0, bucket=bucket):
            b = collate(tok, idx, tk.pad_token_id)
            real += int(b["explain_mask"].sum()) + int(b["rationale_ids"].ne(-100).sum())
            padded += b["explain_ids"].numel() + b["rationale_ids"].numel()
        return padded / real

    assert pad_ratio(True) < pad_ratio(False)


def test_workers_of_one_step_get_neighbouring_batches_of_the_bucketed_order():
    """With 2 workers, the two micro-batches of a step are neighbours in the length-sorted order
    (so neither worker waits on a much longer batch); one worker sees the same batches as before."""
    tok, _ = _tok(800)
    assert epoch_batches(tok, 16, seed=0, epoch=0, bucket=True, group=1) == epoch_batches(tok, 16, 0, 0, True)
    grouped = epoch_batches(tok, 16, seed=0, epoch=0, bucket=True, group=2)
    assert sorted(map(tuple, grouped)) == sorted(map(tuple, epoch_batches(tok, 16, 0, 0, True)))

    def gap(batches):
        cost = [max(len(tok.explain_ids[i]) for i in b) for b in batches]
        return sum(abs(cost[k] - cost[k + 1]) for k in range(0, len(cost) - 1, 2))

    assert gap(grouped) < gap(epoch_batches(tok, 16, 0, 0, True))
    r0 = BatchStream(tok, 16, seed=0, bucket=True, world=2, rank=0, accum=1)
    r1 = BatchStream(tok, 16, seed=0, bucket=True, world=2, rank=1, accum=1)
    assert [r0.next_step()[0], r1.next_step()[0]] == grouped[:2]


def test_props_labels_alone_cannot_answer_validation_but_rationales_can():
    """The ablation family: validation and test ask the colour of boxes whose training questions
    are all "is it big?" (size says nothing about colour); the teacher's rationales name every
    colour. Each split asks its own 60 boxes, once each (60 independent questions), none asked in
    another split; the world (which box has which colour) depends on the data seed."""
    import re

    from mmi_ray.data.builtin import PROP_COLORS, PropsWorld

    w = PropsWorld(0, 60)
    s = builtin_splits(2000, 60, 60, seed=0, tasks=["props"], teacher_error_rate=0.0)
    obj = lambda e: re.search(r"box ([A-Z]{2}):", e.input).group(1)  # noqa: E731
    asked = {(obj(e), "color" if "olor" in e.input else "size") for e in s.train.examples}
    assert {x for x, q in asked if q == "color"} == set(w.boxes["train"])  # held boxes: colour never asked in training
    assert {x for x, q in asked if q == "size"} == set(w.all)
    for split, name in ((s.valid, "valid"), (s.test, "test")):
        keys = [obj(e) for e in split.examples]
        assert sorted(keys) == sorted(w.boxes[name]) and len(set(keys)) == len(keys) == 60  # >= 50 independent questions
        assert {e.label for e in split.examples} == set(PROP_COLORS)
        assert max(sum(e.label == c for e in split.examples) for c in PROP_COLORS) / len(split) < 0.35
    assert not {obj(e) for e in s.valid.examples} & {obj(e) for e in s.test.examples}  # sealed test
    assert not {e.input for e in s.train.examples} & {e.input for e in s.valid.examples + s.test.examples}
    held = set(w.boxes["valid"]) | set(w.boxes["test"])
    for c in PROP_COLORS:  # within each colour of held boxes, sizes are not constant: size tells nothing
        assert {e.label for e in s.train.examples if obj(e) in held and w.color[obj(e)] == c} == {"yes", "no"}
    assert all(e.rationale == f"{w.color[obj(e)]}, {w.size[obj(e)]}" for e in s.train.examples)
    other = PropsWorld(1, 60)  # another data seed, another world
    assert other.boxes != w.boxes and [other.color[k] for k in w.all if k in other.color] != [w.color[k] for k in w.all
                                                                                            if k in other.color]
    # the shipped shape: 40 held boxes per split, 120 taught (their colour asked in training)
    w3 = PropsWorld(0, 40, 120)
    s3 = builtin_splits(4000, 40, 40, seed=0, tasks=["props"], teacher_error_rate=0.0, props_boxes=40,
                        props_taught=120)
    asked3 = {(obj(e), "color" if "olor" in e.input else "size") for e in s3.train.examples}
    assert {x for x, q in asked3 if q == "color"} == set(w3.boxes["train"]) and len(w3.boxes["train"]) == 120
    assert len(w3.all) == 200 and not set(w3.boxes["train"]) & (set(w3.boxes["valid"]) | set(w3.boxes["test"]))
    assert sorted(obj(e) for e in s3.valid.examples) == sorted(w3.boxes["valid"]) and len(s3.valid) == 40
    noisy = generate(400, 0, ["props"], 0.5, world=w)
    slipped = [e for e in noisy if e.rationale != f"{w.color[obj(e)]}, {w.size[obj(e)]}"]
    assert 0.35 < len(slipped) / len(noisy) < 0.65
    assert all(e.teacher_label != e.label for e in slipped)


def test_words_tokenizer_covers_every_generated_word_and_round_trips_labels():
    """The ``words`` tokenizer (built-in task only): no generated word is unknown, a props box is
    one token, labels decode to themselves; another dataset with it is refused at validation."""
    from mmi_ray.config import load_config
    from mmi_ray.errors import ConfigError
    from mmi_ray.model import words_tokenizer

    tk = words_tokenizer()
    exs = generate(400, 5, ["arith", "choice", "nli", "props"], 0.3, max_operand=40)
    for e in exs:
        for text in (e.input, e.label, e.rationale):
            assert tk.unk_token_id not in tk(text).input_ids, text
        assert tk.decode(tk(e.label).input_ids, skip_special_tokens=True) == e.label
    assert len(tk("box KQ: what color?").input_ids) == 7  # box, KQ, :, what, color, ?, </s>
    with pytest.raises(ConfigError, match="model.tokenizer: 'words'"):
        load_config(str(Path(__file__).parents[1] / "configs/tiny_builtin.yaml"),
                    ["model.tokenizer=words", "data.dataset=cqa", "data.data_dir=/x"])
