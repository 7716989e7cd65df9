from reasonrl.rewards import extract_answer, extract_boxed
from reasonrl.rewards.extract import extract_answer_tag


def test_nested_braces_kept_whole():
    assert extract_boxed(r"so \boxed{\frac{\sqrt{2}}{2}}.") == r"\frac{\sqrt{2}}{2}"


def test_last_box_wins():
    assert extract_boxed(r"first \boxed{3}, then \boxed{4}") == "4"
    # Math-Verify #44: two identical boxes were once concatenated into 840840
    assert extract_boxed(r"\boxed{840} and again \boxed{840}") == "840"


def test_unbalanced_last_box_is_none_without_falling_back():
    assert extract_boxed(r"\boxed{\frac{1}{2}") is None
    assert extract_boxed(r"\boxed{7} but actually \boxed{\frac{1}{2}") is None


def test_escaped_braces_and_nested_boxes():
    assert extract_boxed(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"
    assert extract_boxed(r"\boxed{\boxed{5}}") == r"\boxed{5}"


def test_brace_less_token_form_and_unsupported_spellings():
    assert extract_boxed(r"the answer is \boxed 5 apples") == "5"
    assert extract_boxed(r"$\boxed 12$") == "12"
    assert extract_boxed(r"\fbox{5}") is None
    assert extract_boxed(r"\boxedfoo{5}") is None
    assert extract_boxed("no box here") is None
    assert extract_boxed("") is None
    assert extract_boxed(r"\boxed{}") == ""


def test_answer_tags():
    assert extract_answer_tag("<answer> 3 </answer> then <answer>4</answer>") == "4"
    assert extract_answer_tag("<answer>multi\nline</answer>") == "multi\nline"
    assert extract_answer_tag("<answer>5") is None
    assert extract_answer_tag("<answer>a<answer>b</answer>") == "b"


def test_extract_answer_prefers_box_then_tag():
    assert extract_answer(r"<answer>\boxed{5}</answer>") == "5"
    assert extract_answer(r"<answer>7</answer> \boxed{8}") == "8"
    assert extract_answer("<answer>7</answer>") == "7"
    assert extract_answer(r"broken \boxed{1 <answer>7</answer>") == "7"
    assert extract_answer("just text 12") is None
