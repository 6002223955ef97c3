"""The verifier as a policy would attack it: false accepts first, then answers that do not
commit, then correct answers it used to miss, then the conventions it fixes.

Written from the categories of issue 11 (each pair is ours, not another project's suite). Every
case runs through `score_math` (this process) and, where a sample of them goes, through the
worker pool behind `verify`; the numbers in comments say which rule decides.
"""

from __future__ import annotations

import pytest

from qwen25_rl.reward.math import MathStatus, score_math, verify

B = "The final answer is $\\boxed{{{}}}$."

# (response, gold): each must be WRONG.
FALSE_ACCEPTS = [
    # a symbolic "equal" that the numbers contradict
    (B.format("1 + \\frac{1}{\\mathrm{e}}"), "1 - \\frac{1}{\\mathrm{e}}"),
    (B.format("1 - \\frac{1}{\\mathrm{e}}"), "1 + \\frac{1}{\\mathrm{e}}"),
    (B.format("0.0000673 + 0"), ".0000672"),
    (B.format("0.0000673 \\cdot 1"), "0.0000672"),
    (B.format("\\frac{22}{7}"), "\\pi"),
    (B.format("3.14"), "\\pi"),  # three significant digits are not pi
    (B.format("1.4142"), "\\sqrt{2}"),  # five are not sqrt 2 either (six would be)
    (B.format("(0.0000673, 1)"), "(.0000672, 1)"),  # a near-miss inside a tuple
    # LaTeX the parser cannot read is wrong, never "equal" to a number found inside it
    (B.format("\\sum_{k=0}^n\\bigl(k\\bigr)"), "0"),
    (B.format("x^2 \\bigl( 3"), "3"),
    (B.format("\\frac{1}{"), "1"),
    (B.format("\\sqrt[3]{}\\}"), "3"),
    # two numbers on two lines are not a mixed number
    ("\\boxed{11\n5/6}", "\\frac{71}{6}"),
    ("#### 11\n5/6", "\\frac{71}{6}"),
]

# (response, gold): answers that name the gold beside a way out; each must be WRONG.
NOT_COMMITTED = [
    (B.format("9 \\text{ (or } 10\\text{)}"), "9"),
    (B.format("9 \\text{ or } 10"), "9"),
    (B.format("9 \\text{ or maybe } 10"), "10"),
    (B.format("\\text{either } 9 \\text{ or } 10"), "9"),
    ("#### 18 or nineteen", "18"),
    ("The answer is 18 or 19.", "18"),
    (B.format("\\neg 9"), "9"),
    (B.format("\\lnot 9"), "9"),
    (B.format("\\neq 9"), "9"),
    (B.format("x \\ne 9"), "9"),
    (B.format("9 \\text{ is not the answer}"), "9"),
    (B.format("9 \\text{ is wrong}"), "9"),
    (B.format("9?"), "9"),
    (B.format("10 \\to 9"), "9"),
    (B.format("10 \\Rightarrow 9"), "9"),
    (B.format("9 \\implies 10"), "10"),
    (B.format("x = 9 \\lor x = 10"), "9"),
    ("The answer is 9 → 10.", "10"),  # Unicode arrow
    ("The answer is ¬9.", "9"),
    # false equations: every "=" link must hold, and "2x = 9" is not "9"
    (B.format("10 = 9"), "9"),
    (B.format("x = 10 = 9"), "9"),
    (B.format("2x = 9"), "9"),
    (B.format("a + b = 9"), "9"),
    (B.format("3 + 3 = 7"), "7"),
    (B.format("\\frac{1}{3} = 0.33"), "0.33"),
    (B.format("y = 9"), "x = 9"),
]

# (response, gold): correct answers the verifier used to miss; each must be CORRECT.
MISSED = [
    # several boxes answer a gold with several values, together
    ("\\boxed{1}, \\boxed{2}", "\\{1,2\\}"),
    ("The roots are $\\boxed{1}$ and $\\boxed{2}$.", "1, 2"),
    ("\\boxed{-3} \\quad \\boxed{2}", "2, -3"),
    ("The solutions are \\boxed{1} or \\boxed{2}", "\\{1, 2\\}"),
    # a gold with several boxes or several math spans keeps all of them
    ("\\boxed{1, 2}", "The roots are $\\boxed{1}$ and $\\boxed{2}$."),
    ("\\boxed{2, 1}", "$1$ and $2$"),
    ("\\boxed{\\{3, 5\\}}", "$x = 3$ or $x = 5$"),
    # "final answer" sentences give their value, and a later one revises an earlier box
    ("Final Answer: The largest $n$ is 34.", "34"),
    ("Final Answer: The final answer is $28 \\%$. I hope it is correct.", "28"),
    ("So we get \\boxed{5}. Wait, I dropped a sign. The final answer is 7.", "7"),
    ("First \\boxed{4}.\n\n**Final Answer**\n$-4$", "-4"),
    ("\\boxed{12}. Final answer: $\\frac{1}{12}$", "\\frac{1}{12}"),
    # money in math mode: an escaped dollar is currency, not the end of the span
    ("The answer is $\\$36$.", "\\$36"),
    ("The answer is $\\$18.90$.", "\\$18.90"),
    ("Final Answer: The final answer is $\\$32,\\!348$. I hope it is correct.", "\\$32,\\!348"),
    ("It costs $\\$5$ per hour, so the answer is $\\$40$.", "40"),
    # a tuple for a vector gold, and a vector for a tuple gold
    (B.format("(1, 2)"), "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    (B.format("(-\\frac{1}{2}, 3, 0)"), "\\begin{pmatrix} -1/2 \\\\ 3 \\\\ 0 \\end{pmatrix}"),
    (B.format("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"), "(1, 2)"),
    # the answer can name the quantity, or run a chain that holds
    (B.format("x = 3 + 2 = 5"), "5"),
    (B.format("\\frac{1}{2} = 0.5"), "0.5"),
    (B.format("f(3) = 7"), "7"),
    (B.format("x = 2 \\text{ or } x = -3"), "2, -3"),
    # what the gold itself says is allowed
    (B.format("x \\neq 2"), "x \\ne 2"),
    (B.format("\\text{No}"), "\\text{No}"),
    # a label and one math span is that span; unit text in any text font
    ("Answer $9$", "9"),
    ("Result: \\[ x = 2 \\]", "2"),
    ("The distance is $\\boxed{125\\textnormal{ miles}}$.", "125"),
    # a tuple of names on the left, and a set written with plain braces
    (B.format("(x, y) = (5, 8)"), "(5, 8)"),
    ("\\boxed{1} and \\boxed{2} and \\boxed{3}", "{1,2,3}"),
    # a gold that is a reference solution ending in a final-answer sentence
    ("\\boxed{28\\%}", "So the loss is $100\\% - 72\\%$. Final Answer: The final answer is $28 \\%$. I hope it is correct."),
    # a final-answer sentence stating one number
    ("Final Answer: Jane started growing it 3 hours ago.", "3"),
    # decimals of six or more significant digits stand for an irrational gold too
    (B.format("3.14159"), "\\pi"),
    (B.format("1.414214"), "\\sqrt{2}"),
    (B.format("0.7071068"), "\\frac{\\sqrt{2}}{2}"),
]

# (response, gold, expected, convention)
CONVENTIONS = [
    # anchoring
    ("The answer is 3. \\boxed{5}", "5", True, "a box outranks a generic 'answer is'"),
    ("\\boxed{5}. The answer is clear.", "5", True, "a generic phrase after a box does not override it"),
    ("\\boxed{5}. So the final answer is indeed right.", "5", True, "a final-answer comment without a value does not override"),
    ("\\boxed{3}, then finally \\boxed{5}", "3", False, "only the last box counts (no hedging with several)"),
    ("\\boxed{9} or \\boxed{10}", "9", False, "several boxes vs a single gold: the last one"),
    ("\\boxed{1}, \\boxed{2}, \\boxed{3}", "\\{1, 2\\}", False, "a box group is the whole set: an extra element is wrong"),
    ("\\boxed{4} ... so the answer is \\boxed{5", "4", True, "an unclosed box does not count"),
    ("#### 18\n\\boxed{20}", "20", True, "the latest of a box and a #### line wins"),
    ("\\boxed{20}\n#### 18", "18", True, "the latest of a box and a #### line wins"),
    ("Answer $ \n 9 \n $", "9", False, "inline math does not run across lines"),
    ("Therefore $x \\geq 5$ is the solution.", "x \\ge 5", False, "no anchor: prose is not searched for an answer"),
    # decimal comma: a comma is a separator, never a decimal point
    (B.format("1,5"), "1.5", False, "1,5 is a list of two numbers"),
    (B.format("1,500"), "1500", True, "three digits after a comma: a thousands separator"),
    (B.format("1,500.25"), "1500.25", True, "thousands separator before a decimal point"),
    # percent: a unit when the gold is the bare number, never a change of scale
    (B.format("25\\%"), "25", True, "percent sign is a unit"),
    (B.format("0.25"), "25\\%", False, "0.25 is not 25%"),
]


@pytest.mark.parametrize(("response", "gold"), FALSE_ACCEPTS)
def test_false_accepts_are_wrong(response, gold):
    score = score_math(response, gold, timeout_s=10)
    assert score.status is MathStatus.WRONG, score


@pytest.mark.parametrize(("response", "gold"), NOT_COMMITTED)
def test_answers_that_do_not_commit_are_wrong(response, gold):
    score = score_math(response, gold, timeout_s=10)
    assert score.status is MathStatus.WRONG, score


@pytest.mark.parametrize(("response", "gold"), MISSED)
def test_correct_answers_that_were_missed_are_correct(response, gold):
    score = score_math(response, gold, timeout_s=10)
    assert score.correct, score


@pytest.mark.parametrize(("response", "gold", "expected", "convention"), CONVENTIONS, ids=[c[3] for c in CONVENTIONS])
def test_conventions(response, gold, expected, convention):
    assert score_math(response, gold, timeout_s=10).correct is expected, convention


def test_hedges_are_refused_before_any_parsing_with_the_reason():
    score = score_math(B.format("9 \\text{ (or } 10\\text{)}"), "9")
    assert (score.path, score.status) == ("refused", MathStatus.WRONG)
    assert "does not commit" in score.detail and "'or'" in score.detail


def test_an_unparsable_answer_and_a_false_equation_say_so():
    assert "could not be parsed" in score_math(B.format("\\frac{1}{"), "1").detail
    assert "false equation" in score_math(B.format("2x = 9"), "9").detail


def test_an_unparsable_gold_is_an_error_not_a_verdict():
    score = score_math(B.format("5"), "\\frac{1}{", timeout_s=10)
    assert score.status is MathStatus.ERROR and "gold" in score.detail


def test_the_worker_pool_agrees_with_the_in_process_verdicts():
    for response, gold in FALSE_ACCEPTS[::3] + NOT_COMMITTED[::5]:
        assert verify(response, gold) is False, (response, gold)
    for response, gold in MISSED[::4]:
        assert verify(response, gold) is True, (response, gold)
