"""Prompt building against golden files (rendered through Qwen3's real chat template).

Regenerate after an intended template change with `UPDATE_GOLDEN=1 pytest ...`
and review the diff.
"""

import json
import os
from pathlib import Path

import pytest

from int_jax.data.tokenizer import load_tokenizer
from int_jax.intervention.prompts import PromptSet, TemplateError, load_template
from int_jax.intervention.steps import split_steps

GOLDEN = Path(__file__).parent / "golden"

PROBLEM = r"Find all real $x$ with $x^2 - 3x + 2 = 0$. Write them as a set {like {1, 2}}."
REFERENCE = r"Factor: $(x-1)(x-2)=0$, so $x \in \{1, 2\}$."
GUIDED = "The quadratic factors as $(x-1)(x-2)$.\n\nSo the roots are 1 and 2: $\\boxed{\\{1,2\\}}$."
ATTEMPT = ("We divide by $x - 1$: $x - 2 = 0$.\r\n\r\n\r\nSo $x = 2$.\n\n  The answer is "
           "$\\boxed{\\{2\\}}$.  ")


def _check_golden(name: str, text: str):
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing; run with UPDATE_GOLDEN=1 once"
    assert text == path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def prompts():
    return PromptSet.load()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_problem_chat_is_one_user_message(prompts, tokenizer):
    chat = prompts.problem_chat(PROBLEM)
    assert [m["role"] for m in chat] == ["user"]
    assert PROBLEM in chat[0]["content"]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    _check_golden("problem_chat.txt", text)


def test_proposal_chat_three_turns(prompts, tokenizer):
    chat = prompts.proposal_chat(PROBLEM, REFERENCE, GUIDED, split_steps(ATTEMPT))
    assert [m["role"] for m in chat] == ["user", "assistant", "user"]
    assert REFERENCE in chat[0]["content"] and PROBLEM in chat[0]["content"]
    assert chat[1]["content"] == GUIDED
    assert "Step 1: We divide by $x - 1$" in chat[2]["content"]
    assert "Step 3: The answer is $\\boxed{\\{2\\}}$." in chat[2]["content"]
    assert "Step 4" not in chat[2]["content"]
    assert "<intervention>" in chat[2]["content"]
    _check_golden("proposal_chat.json", json.dumps(chat, indent=1, ensure_ascii=False) + "\n")
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    _check_golden("proposal_chat.txt", text)


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
