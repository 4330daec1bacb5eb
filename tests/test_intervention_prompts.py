"""Prompt building against golden files (rendered through Qwen3's real chat template).

Regenerate after an intended template change with `UPDATE_GOLDEN=1 pytest ...`
and review the diff.
"""

import json
import os
from pathlib import Path

import pytest

from int_jax.data.tokenizer import load_tokenizer
from int_jax.intervention.prompts import PromptSet, TemplateError, hint_prefix, load_template
from int_jax.intervention.steps import StepFormat

GOLDEN = Path(__file__).parent / "golden"

PROBLEM = r"Find all real $x$ with $x^2 - 3x + 2 = 0$. Write them as a set {like {1, 2}}."
REFERENCE = r"Factor: $(x-1)(x-2)=0$, so $x \in \{1, 2\}$."
GUIDED = "The quadratic factors as $(x-1)(x-2)$.\n\nSo the roots are 1 and 2: $\\boxed{\\{1,2\\}}$."
ATTEMPT = ("We divide by $x - 1$: $x - 2 = 0$.\r\n\r\n\r\nSo $x = 2$.\n\n  The answer is "
           "$\\boxed{\\{2\\}}$.  ")


def _check_golden(name: str, text: str):
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_bytes(text.encode("utf-8"))
    assert path.exists(), f"{path} missing; run with UPDATE_GOLDEN=1 once"
    assert text == path.read_bytes().decode("utf-8")  # bytes: a CR in the text is kept


@pytest.fixture(scope="module")
def prompts():
    return PromptSet.load()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_problem_chat_is_the_raw_problem(prompts, tokenizer):
    """The authors' rollout prompt: the problem text alone as the user message."""
    chat = prompts.problem_chat(PROBLEM)
    assert chat == [{"role": "user", "content": PROBLEM}]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    _check_golden("problem_chat.txt", text)


def test_problem_with_instruction_is_a_switch(tokenizer):
    chat = PromptSet.load({"problem": "problem_with_instruction"}).problem_chat(PROBLEM)
    assert chat[0]["content"].startswith(PROBLEM + "\n\n") and "\\boxed{}" in chat[0]["content"]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    _check_golden("problem_with_instruction_chat.txt", text)


def test_proposal_chat_three_turns(prompts, tokenizer):
    steps = StepFormat()
    chat = prompts.proposal_chat(PROBLEM, REFERENCE, GUIDED, steps.number(steps.split(ATTEMPT)))
    assert [m["role"] for m in chat] == ["user", "assistant", "user"]
    assert REFERENCE in chat[0]["content"] and PROBLEM in chat[0]["content"]
    assert chat[1]["content"] == GUIDED
    task = chat[2]["content"]
    # The attempt split on "\n\n" as it is (CRLF blank lines are not breaks), Substep labels.
    assert "**Substep 1:** We divide by $x - 1$: $x - 2 = 0$.\r\n\r\n\r\nSo $x = 2$." in task
    assert "**Substep 2:**   The answer is" in task and "**Substep 3:**" not in task
    # The authors' order: log of every step, critical error, draft, self-check, final block.
    heads = ["Verification log", "Critical error", "Draft intervention", "Check of the draft",
             "Final answer"]
    at = [task.index(h) for h in heads]
    assert at == sorted(at)
    for question in ("final answer?", "key idea", "later than the first critical error"):
        assert question in task
    assert task.rstrip().endswith("</intervention>")
    _check_golden("proposal_chat.json", json.dumps(chat, indent=1, ensure_ascii=False) + "\n")
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    _check_golden("proposal_chat.txt", text)


def test_short_proposal_task_is_a_switch(tokenizer):
    prompts = PromptSet.load({"verify_attempt": "verify_attempt_short"})
    steps = StepFormat(split_mode="normalized", label="Step {i}:", double_newlines=False)
    chat = prompts.proposal_chat(PROBLEM, REFERENCE, GUIDED, steps.number(steps.split(ATTEMPT)))
    task = chat[2]["content"]
    assert "Step 1: We divide by $x - 1$" in task
    assert "Step 3: The answer is $\\boxed{\\{2\\}}$." in task and "Step 4" not in task
    assert "Verification log" not in task and "<intervention>" in task
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    _check_golden("proposal_chat_short.txt", text)


def test_reflect_chat(prompts):
    chat = prompts.reflect_chat(PROBLEM, REFERENCE, ATTEMPT)
    _check_golden("reflect_chat.json", json.dumps(chat, indent=1, ensure_ascii=False) + "\n")


def test_values_are_not_rescanned(prompts):
    chat = prompts.problem_chat("What is {{reference_solution}}?")
    assert "What is {{reference_solution}}?" in chat[0]["content"]


def test_config_can_point_elsewhere(tmp_path):
    f = tmp_path / "bare.txt"
    f.write_text("{{problem}}\n")
    prompts = PromptSet.load({"problem": str(f)})
    assert prompts.problem_chat("2+2?") == [{"role": "user", "content": "2+2?"}]


def test_bad_templates_name_the_file(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("Solve {{problem}} using {{hint}}")
    with pytest.raises(TemplateError, match=r"t\.txt.*unknown placeholder.*hint"):
        load_template("problem", f)
    f.write_text("Solve it.")
    with pytest.raises(TemplateError, match=r"t\.txt.*lacks.*problem"):
        load_template("problem", f)
    with pytest.raises(TemplateError, match="cannot read"):
        load_template("problem", tmp_path / "missing.txt")
    with pytest.raises(TemplateError, match="unknown template name"):
        PromptSet.load({"problme": str(f)})


def test_hint_chat_carries_the_start_of_the_reference(prompts, tokenizer):
    """Hint-guided RL's prompt: the problem, then the first half of the reference
    solution's words (cut after a whole word, the text between them kept)."""
    reference = REFERENCE + "\n\nThe answer is $\\boxed{\\{1,2\\}}$."
    hint = hint_prefix(reference, 0.5)
    assert hint == r"Factor: $(x-1)(x-2)=0$, so $x \in \{1,"  # 6 of 11 words
    chat = prompts.hint_chat(PROBLEM, hint)
    assert [m["role"] for m in chat] == ["user"]
    assert chat[0]["content"].startswith(PROBLEM + "\n\n") and chat[0]["content"].endswith(hint)
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    _check_golden("problem_with_hint_chat.txt", text)


def test_hint_prefix_fractions():
    text = "a  b\n\nc d"
    assert hint_prefix(text, 0.0) == "" and hint_prefix(text, 1.0) == text
    assert hint_prefix(text, 0.5) == "a  b" and hint_prefix(text, 0.51) == "a  b\n\nc"
    assert hint_prefix("  padded words  ", 1.0) == "padded words"
    with pytest.raises(ValueError, match="fraction"):
        hint_prefix(text, 1.5)
