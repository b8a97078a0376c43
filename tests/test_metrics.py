import math

import pytest

from mmi_ray.metrics import accuracy, equation_equal, label_correct, safe_arith


@pytest.mark.parametrize(
    "text,value",
    [("( 10.0 * 45.0 )", 450.0), ("(10 * 45)", 450.0), ("( ( 3.0 + 4.0 ) / 2.0 )", 3.5), ("-2 ** 3", -8.0),
     ("7", 7.0), ("  12 - 15 ", -3.0), ("9 // 2", 4.0), ("9 % 4", 1.0)],
)
def test_safe_arith_values(text, value):
    assert safe_arith(text) == value


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('echo pwned')", "open('/etc/passwd').read()", "(1, 2)", "x + 1", "1 / 0",
     "2 ** 100000", "'a' * 3", "[1, 2]", "lambda: 1", "", "1 +", "(" * 400 + "1" + ")" * 400, None],
)
def test_safe_arith_rejects_everything_else(text):
    assert safe_arith(text) is None


def test_equations_compare_by_value():
    assert equation_equal("(10 * 45)", "( 10.0 * 45.0 )")
    assert equation_equal("( 1.0 / 3.0 )", "(1/3)")
    assert not equation_equal("( 10.0 + 45.0 )", "( 10.0 * 45.0 )")
    assert not equation_equal("(3, 4)", "( 3.0 )")  # a tuple is wrong, never an error


def test_malicious_prediction_is_just_wrong(tmp_path):
    marker = tmp_path / "pwned"
    pred = f"__import__('pathlib').Path('{marker}').write_text('x')"
    assert not label_correct(pred, "( 1.0 + 1.0 )", "equation")
    assert not marker.exists()


def test_text_labels_exact_match_and_accuracy():
    assert label_correct(" wooded area ", "wooded area", "text")
    assert not label_correct("Wooded area", "wooded area", "text")
    assert accuracy(["a", "b", "(2*2)"], ["a", "c", "4"], ["text", "text", "equation"]) == pytest.approx(2 / 3)


# --- the equation metric terminates quickly and never raises, on any text

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _expressions():
    numbers = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(-1e6, 1e6, allow_nan=False).map(repr),
                        st.sampled_from(["99999", "9" * 300, "1e308", "0"]))
    return st.recursive(numbers, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "//", "%", "**"]), inner).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
        inner.map(lambda e: f"-{e}")), max_leaves=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=600), _expressions()))
def test_safe_arith_never_raises_and_returns_a_finite_float_or_none(text):
    value = safe_arith(text)
    assert value is None or (isinstance(value, float) and math.isfinite(value))
    assert equation_equal(text, "( 1.0 + 1.0 )") in (True, False)


@pytest.mark.parametrize("text", ["99999**64", "(((9**64)**64)**64)**64", "9" * 400, "1e308 * 10", "(-8) ** 0.5",
                                  "2 ** 64 ** 64", "1 is 1", "(" * 90 + "1" + ")" * 90 + "**" + "9" * 50])
def test_huge_or_deep_expressions_are_wrong_answers_not_errors(text):
    assert safe_arith(text) is None or math.isfinite(safe_arith(text))
    assert not label_correct(text, "( 3.0 )", "equation")


def test_scoring_ten_thousand_random_outputs_terminates():
    """Speed is measured by benchmarks/equation_metric.py (goal < 1 s); this only pins that scoring
    pathological outputs cannot take seconds each again."""
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from equation_metric import outputs

    texts = outputs(10_000)
    t0 = time.perf_counter()
    results = [label_correct(t, "( 84.0 / 2.0 )", "equation") for t in texts]
    assert time.perf_counter() - t0 < 20.0 and not any(results[-1_000:])  # towers: all wrong, none slow


def test_ece_matches_hand_computed_cases():
    """The MI paper's equal-mass ECE (100 bins: below 100 examples one example per bin) and the
    equal-width 15-bin ECE (torchmetrics), on cases computed by hand."""
    from mmi_ray.metrics import ece_equal_mass, ece_equal_width

    conf, ok = [0.9, 0.8, 0.3, 0.6], [True, False, False, True]
    assert ece_equal_mass(conf, ok) == pytest.approx((0.1 + 0.8 + 0.3 + 0.4) / 4)
    assert ece_equal_width(conf, ok) == pytest.approx(0.4)  # each in a bin of its own
    # two examples in one equal-width bin [0.6, 0.667): accuracy 0.5 against mean confidence 0.63
    assert ece_equal_width([0.61, 0.65], [False, True]) == pytest.approx(0.13)
    assert ece_equal_mass([0.61, 0.65], [False, True]) == pytest.approx((0.61 + 0.35) / 2)
    # 200 examples: equal-mass bins of 2, sorted by confidence; the 0.5 ones alternate right/wrong
    conf = [0.5] * 100 + [0.9] * 100
    ok = [i % 2 == 0 for i in range(100)] + [True] * 100
    assert ece_equal_mass(conf, ok) == pytest.approx(0.05) and ece_equal_width(conf, ok) == pytest.approx(0.05)
    assert math.isnan(ece_equal_mass([], []))


def test_equal_width_ece_bins_exactly_as_torchmetrics():
    """Our 15-bin ECE (no torchmetrics import in the trial processes) equals torchmetrics' binary
    calibration error on random data, bin edges and 1.0 included."""
    import random

    import torch
    from torchmetrics.functional.classification import binary_calibration_error

    from mmi_ray.metrics import ece_equal_width

    rng = random.Random(0)
    for n in (1, 7, 100, 1000):
        conf = [rng.choice([rng.random(), 1.0, 0.0, round(rng.randint(0, 15) / 15, 12)]) for _ in range(n)]
        ok = [rng.random() < c for c in conf]
        ref = float(binary_calibration_error(torch.tensor(conf, dtype=torch.float64), torch.tensor([int(x) for x in ok]),
                                             n_bins=15, norm="l1"))
        assert ece_equal_width(conf, ok) == pytest.approx(ref, abs=1e-9), n


CQA_Q = ("A beaver is know for building prowess, their supplies come from where?\nAnswer Choices:\n"
         "(a) british columbia\n(b) body of water\n(c) wooded area\n(d) pay debts\n(e) zoo")


@pytest.mark.parametrize("pred,gold,question,same", [
    # case, markup, punctuation around the answer, articles, whitespace
    ("Wooded area", "wooded area", "", True),
    ("**wooded area**", "wooded area", "", True),
    ("__Wooded Area__", "wooded area", "", True),
    ("`wooded area`", "wooded area", "", True),
    ("The wooded area.", "wooded area", "", True),
    ('"wooded  area"!', "wooded area", "", True),
    ("an apple", "Apple", "", True),
    # a choice letter before the text is dropped; alone, it is the option the question lists
    ("(c) wooded area", "wooded area", "", True),
    ("c) Wooded area", "wooded area", CQA_Q, True),
    ("c", "wooded area", CQA_Q, True),
    ("(C)", "wooded area", CQA_Q, True),
    ("C.", "wooded area", CQA_Q, True),
    ("(b)", "wooded area", CQA_Q, False),
    ("c", "wooded area", "", False),  # no options listed: a letter is just a letter
    ("(b) wooded area", "wooded area", CQA_Q, True),  # the text decides, not a mismatched letter
    # what stays different
    ("body of water", "wooded area", CQA_Q, False),
    ("wooded areas", "wooded area", "", False),
    ("not wooded area", "wooded area", "", False),
    ("", "wooded area", "", False),
    ("yes", "no", "", False),
])
def test_answers_match_as_people_mean_them(pred, gold, question, same):
    assert label_correct(pred, gold, "answer", question) is same
    assert label_correct(pred, gold, "text", question) is (pred.strip() == gold.strip())  # DSS: exact, as the papers


def test_inline_choices_are_read_only_as_a_list_from_a():
    from mmi_ray.metrics import inline_choices

    assert inline_choices("Where? Answer Choices: (a) ignore (b) enforce (c) authoritarian") == \
        {"a": "ignore", "b": "enforce", "c": "authoritarian"}
    assert inline_choices(CQA_Q)["e"] == "zoo"
    assert inline_choices("Is (b) the answer?") == {}
    assert inline_choices("(b) one (c) two") == {}
