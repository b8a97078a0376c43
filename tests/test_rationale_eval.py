"""Rationale quality and faithfulness: what a rationale states, read exactly; BLEU / ROUGE-L."""

import pytest

from mmi_ray.data.builtin import PropsWorld, generate
from mmi_ray.rationale_eval import score_rationales, stated_answer


def test_stated_answer_is_read_exactly_on_every_family():
    w = PropsWorld(0, 60)
    for ex in generate(60, 3, ["arith", "choice", "nli", "props"], 0.0, world=w):
        assert stated_answer(ex.rationale, ex.input, ex.task) == ex.teacher_label, ex  # the teacher's own answer
    assert stated_answer("blue, small", "box KQ: what color?", "props") == "blue"
    assert stated_answer("blue, small", "box KQ: is it big?", "props") == "no"
    assert stated_answer("blue", "box KQ: is it big?", "props") is None
    assert stated_answer("3 + 4 = 7. The answer is", "", "arith") is None
    # DSS datasets: the teacher's parsers
    assert stated_answer("Rivers flow. So the answer is (b) water.", "", "cqa") == "water"
    assert stated_answer("Rivers flow.", "", "cqa") is None


def test_scores_are_hand_checkable():
    recs = [("blue, small", "blue, small", "blue", "blue", "text", "props", "box KQ: what color?"),
            ("red, big", "gold, big", "gold", "gold", "text", "props", "box QK: what color?"),
            ("gold", "green, small", "gold", "green", "text", "props", "box ZZ: what color?")]
    s = score_rationales(recs)
    # stated: blue (gold blue, predicted blue), red (gold gold, predicted gold), none
    assert s["answered"] == pytest.approx(2 / 3) and s["true"] == pytest.approx(1 / 3)
    assert s["faithful"] == pytest.approx(1 / 3)
    # ROUGE-L F1 per pair (lower-cased words, punctuation dropped): 1; "red big" / "gold big": 0.5; 0
    assert s["rougeL"] == pytest.approx((1 + 0.5 + 0) / 3, abs=1e-6)
    same = score_rationales([("the cat sat on the mat", "the cat sat on the mat", "x", "x", "text", "t", "")])
    assert same["bleu"] == pytest.approx(100.0) and same["rougeL"] == pytest.approx(1.0)
    # a right rationale under 4 tokens is not scored 0; a wrong one: 1-gram precision 1/3 (","), 2- and
    # 3-grams none, smoothed to 1/4 and 1/4 (sacreBLEU's "exp"): (1/3 * 1/4 * 1/4) ** (1/3) = 27.52
    short = score_rationales([("blue, small", "blue, small", "x", "x", "text", "props", "box KQ: is it big?")])
    wrong = score_rationales([("red, big", "blue, small", "x", "x", "text", "props", "box KQ: is it big?")])
    assert short["bleu"] == pytest.approx(100.0) and wrong["bleu"] == pytest.approx(27.516, abs=1e-3)
    assert score_rationales([]) == {}
