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
