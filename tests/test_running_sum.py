"""The running-sum domain: problems, the exact checker, the error generator, the
character tokenizer and the base model's data (fast; no model)."""

from __future__ import annotations

import json
import math
import random
import string

import pytest

from int_jax.data.records import Problem
from int_jax.intervention.parse import parse_intervention
from int_jax.running_sum import base_data, chat, checker, problems, traces
from int_jax.running_sum.tokenizer import (IM_END, IM_START, PAD, build_tokenizer, sampler_ids,
                                           save_tokenizer, special_ids)

EXAMPLE = "47+8=55\n\n55+5=60\n\n60+9=69\n\n69+36=105\n\n\\boxed{105}"


def _carries(start, operands):
    """Carry steps counted digit by digit, independently of problems.is_carry."""
    count, total = 0, start
    for x in operands:
        count += int(str(total)[-1]) + int(str(x)[-1]) >= 10
        total += x
    return count


# -- problems ---------------------------------------------------------------------


def test_the_issue_example_and_its_steps():
    p = problems.make_problem("x", 47, [8, 5, 9, 36])
    assert p.problem == "Add 47+8+5+9+36."
    assert p.reference_solution == EXAMPLE
    assert p.answer == "105"
    fmt = chat.step_format()
    assert fmt.split(EXAMPLE) == ["47+8=55", "55+5=60", "60+9=69", "69+36=105", "\\boxed{105}"]
    assert fmt.number(fmt.split(EXAMPLE)).startswith("S1: 47+8=55\n\nS2: 55+5=60")
    assert p.meta["carries"] == _carries(47, [8, 5, 9, 36]) == 3  # 47+8, 55+5, 69+36


def test_difficulties():
    easy = problems.problem_set("easy", problems.EASY, 200, seed=1)
    hard = problems.problem_set("hard", problems.HARD, 200, seed=1)
    for p in easy:
        start, ops = problems.operands_of(p)
        assert 2 <= len(ops) <= 4 and _carries(start, ops) == 0
        assert int(p.answer) == start + sum(ops) <= 999
    shares = []
    for p in hard:
        start, ops = problems.operands_of(p)
        assert 6 <= len(ops) <= 10 and start + sum(ops) <= 999
        shares.append(_carries(start, ops) / len(ops))
    # Asked 0.9; a carry lowers the units digit, so about 3 steps in 4 can carry.
    assert sum(shares) / len(shares) > 0.7
    assert len({p.problem for p in easy}) == 200


def test_heldout_excludes_training_texts():
    train = problems.problem_set("t", problems.HARD, 50, seed=0)
    held = problems.problem_set("h", problems.HARD, 50, seed=0,
                                exclude=frozenset(p.problem for p in train))
    assert not {p.problem for p in train} & {p.problem for p in held}


def test_operands_from_text_and_bad_text():
    p = problems.make_problem("x", 12, [3, 4])
    p.meta = {}
    assert problems.operands_of(p) == (12, [3, 4])
    p.problem = "Multiply 3*4."
    with pytest.raises(ValueError, match="not a running-sum problem"):
        problems.operands_of(p)


# -- the checker ----------------------------------------------------------------------


def test_checker_correct_attempt():
    c = checker.check_attempt(47, [8, 5, 9, 36], EXAMPLE)
    assert c.first_wrong is None and c.answer_correct and c.steps_wrong == ()


def test_checker_dropped_carry_then_consistent_steps():
    text = "47+8=45\n\n45+5=50\n\n50+9=59\n\n59+36=95\n\n\\boxed{95}"
    c = checker.check_attempt(47, [8, 5, 9, 36], text)
    assert c.first_wrong == 1 and not c.answer_correct
    assert c.verdicts == ("own_error", "propagated", "propagated", "propagated", "propagated")


def test_checker_second_error_on_a_wrong_left_operand_is_its_own():
    # Step 2 is wrong given its own left operand (45+5 is not 51): an own error, though
    # the first wrong step is still step 1.
    text = "47+8=45\n\n45+5=51\n\n51+9=60\n\n60+36=96\n\n\\boxed{96}"
    c = checker.check_attempt(47, [8, 5, 9, 36], text)
    assert c.verdicts[:2] == ("own_error", "own_error") and c.first_wrong == 1


def test_checker_late_error_missing_and_extra_steps():
    late = "47+8=55\n\n55+5=60\n\n60+9=79\n\n79+36=115\n\n\\boxed{115}"
    assert checker.check_attempt(47, [8, 5, 9, 36], late).first_wrong == 3
    short = "47+8=55\n\n55+5=60"
    c = checker.check_attempt(47, [8, 5, 9, 36], short)
    assert c.first_wrong == 3 and c.verdicts[2:] == ("missing",) * 3 and not c.answer_correct
    extra = EXAMPLE + "\n\n\\boxed{105}"
    c = checker.check_attempt(47, [8, 5, 9, 36], extra)
    assert c.first_wrong == 6 and c.verdicts[-1] == "extra" and c.answer_correct
    garbage = "47+8=55\n\nthe answer is\n\n\\boxed{105}"
    c = checker.check_attempt(47, [8, 5, 9, 36], garbage)
    assert c.first_wrong == 2 and c.verdicts[1] == "own_error"
    # A wrong operand is an own error even when the sum of what was written is right.
    assert checker.check_attempt(47, [8, 5], "47+9=56\n\n56+5=61\n\n\\boxed{61}").verdicts[0] == "own_error"


# -- the error generator ------------------------------------------------------------------


def test_no_drop_is_the_reference_and_full_drop_drops_every_carry():
    rng = random.Random(0)
    for p in problems.problem_set("h", problems.HARD, 30, seed=2):
        start, ops = problems.operands_of(p)
        assert traces.attempt(start, ops, rng, drop=0.0) == p.reference_solution
        steps = traces.attempt_steps(start, ops, rng, drop=1.0)
        total = start
        for step, x in zip(steps, ops):  # independent: the carry judged on the own total
            want = total + x - 10 if (total % 10) + (x % 10) >= 10 else total + x
            assert step == f"{total}+{x}={want}"
            total = want
        assert steps[-1] == f"\\boxed{{{total}}}"


def test_drop_rate_and_hard_accuracy():
    """Per carry step a Bernoulli(drop) draw; over N draws the frequency lies within
    5 binomial standard deviations of drop (a false failure has chance < 1e-6)."""
    rng = random.Random(3)
    drop, n = traces.DROP, 4000
    start, ops = 47, [8, 5]  # step 1 carries; step 2 carries only after a drop (45+5)
    first = sum(traces.attempt_steps(start, ops, rng, drop)[0] == "47+8=45" for _ in range(n))
    sd = math.sqrt(drop * (1 - drop) / n)
    assert abs(first / n - drop) < 5 * sd
    # A problem with c carry steps is solved with chance (1 - drop)^c.
    start, ops = 19, [1, 9, 1, 9, 1, 9, 1, 9]  # 19+1=20 carries, 20+9 not: 4 carries
    c = _carries(start, ops)
    solved = sum(checker.check_attempt(start, ops, traces.attempt(start, ops, rng, drop)).answer_correct
                 for _ in range(n))
    want = (1 - drop) ** c
    assert abs(solved / n - want) < 5 * math.sqrt(want * (1 - want) / n)


# -- the tokenizer ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = save_tokenizer(tmp_path_factory.mktemp("tok"))
    from int_jax.data.tokenizer import load_tokenizer

    return load_tokenizer(folder), folder


TEXTS = [EXAMPLE, string.printable, "  two  spaces \n\n\n three newlines\t\ttabs ", " ", "\n",
         '<intervention>{"location": 3, "content": "60+9=69"}</intervention>',
         "a <|im_end|> inside text", "\\boxed{  }"]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_exact(tokenizer, text):
    tok, _ = tokenizer
    ids = tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert len(ids) == len(text)  # one token per character, special strings as text
    assert tok.decode(ids, skip_special_tokens=False) == text


def test_chat_template_and_specials(tokenizer):
    tok, folder = tokenizer
    messages = [{"role": "user", "content": "Add 1+2."}, {"role": "assistant", "content": "1+2=3"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>user\nAdd 1+2.<|im_end|>\n<|im_start|>assistant\n1+2=3<|im_end|>\n"
                    "<|im_start|>assistant\n")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=False) == text
    ids_of = special_ids(folder)
    assert ids.count(ids_of[IM_START]) == 3 and ids.count(ids_of[IM_END]) == 2
    assert sampler_ids(folder) == {"pad_id": ids_of[PAD], "stop_ids": (ids_of[IM_END], ids_of[PAD])}
    assert tok.pad_token_id == ids_of[PAD] and tok.eos_token_id == ids_of[IM_END]
    assert len(tok) == len(build_tokenizer())


def test_special_ids_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        special_ids(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"added_tokens": []}))
    with pytest.raises(ValueError, match="added_tokens"):
        special_ids(tmp_path)


# -- the base model's data ------------------------------------------------------------------


@pytest.mark.parametrize("verify_answer", ["checked", "block"])
def test_verify_examples_name_the_true_first_error(verify_answer):
    """The verification answers parse strictly with the pipeline's own parser, and name
    the checker's first wrong step of the attempt in the chat with the reference's step;
    the checked answer first judges every step up to that one, in order."""
    rng = random.Random(5)
    fmt = chat.step_format()
    seen = 0
    for i in range(60):
        ex = base_data.example("verify", i, rng, drop=traces.DROP, other_errors=0.3,
                               verify_answer=verify_answer)
        if ex is None:
            continue
        seen += 1
        answer = ex.segments[0].text
        parsed = parse_intervention(answer)
        assert parsed.ok and parsed.repairs == ()
        text = ex.messages[0]["content"]
        problem = text.splitlines()[1]
        start, ops = problems.operands_of(Problem(id="p", problem=problem, answer=""))
        numbered = ex.messages[2]["content"].split("Attempt:\n", 1)[1].rsplit("\nFind", 1)[0]
        steps = [s.split(": ", 1)[1] for s in numbered.split("\n\n")]
        first = checker.check_steps(start, ops, steps).first_wrong
        reference = problems.reference_steps(start, ops)
        assert parsed.location == first
        assert parsed.content == reference[first - 1]
        assert ex.messages[1]["content"] == problems.make_problem("q", start, ops).reference_solution
        assert fmt.number(steps) == numbered
        judged = answer.split("\n")[:-1]
        if verify_answer == "block":
            assert judged == []
            continue
        assert judged == [f"S{k}: {steps[k - 1]} ok" for k in range(1, first)] + [
            f"S{first}: {steps[first - 1]} no, {reference[first - 1]}"]
    assert seen > 40


def test_example_mix_and_bad_kind():
    out = base_data.examples(200, {"trace": 1, "guided": 1, "verify": 1, "copy": 1, "reflect": 1,
                                   "hint": 1},
                             seed=0, drop=0.35, other_errors=0.3)
    kinds = {e.meta["kind"] for e in out}
    assert kinds == set(base_data.KINDS) and len(out) == 200
    hints = [e for e in out if e.meta["kind"] == "hint"]
    for e in hints:  # the hint's steps start the answer
        hint = e.messages[0]["content"].split("Hint:\n", 1)[1]
        assert e.segments[0].text.startswith(hint)
    copies = [e for e in out if e.meta["kind"] == "copy"]
    for e in copies:  # the labelled steps again, one per line
        numbered = e.messages[0]["content"].removeprefix(base_data.COPY_PROMPT)
        assert e.segments[0].text == numbered.replace("\n\n", "\n")
    with pytest.raises(ValueError, match="unknown kind"):
        base_data.examples(1, {"trace": 1, "proof": 1}, seed=0, drop=0.3, other_errors=0.0)
    with pytest.raises(ValueError, match="verify_answer='essay'"):
        base_data.examples(1, {"verify": 1}, seed=0, drop=0.3, other_errors=0.0,
                           verify_answer="essay")


def test_seeds_table_reads_each_seed_and_compares_by_the_spread(tmp_path):
    from int_jax.running_sum import seeds

    def write(folder, row, p):
        d = tmp_path / folder / row / "eval"
        d.mkdir(parents=True)
        (d / "summary_heldout_hard.json").write_text(json.dumps({"pass_at_1": p}))

    for folder, (a, b) in {"s0": (0.50, 0.30), "s1": (0.60, 0.45), "s2": (0.55, 0.40)}.items():
        write(folder, "int_rl", a)
        write(folder, "rl", b)
    write("s0", "base", 0.05)
    folders = [tmp_path / f for f in ("s0", "s1", "s2")]
    assert seeds.pass_at_1(folders, "heldout_hard")["base"] == [0.05, None, None]
    r = seeds.beats([0.50, 0.60, 0.55], [0.30, 0.45, 0.40])
    assert r["mean_difference"] == pytest.approx(0.5 / 3, abs=1e-12)
    assert (r["range_a"], r["range_b"], r["clear"]) == (pytest.approx(0.1), pytest.approx(0.15), True)
    assert not seeds.beats([0.50, 0.40], [0.45, 0.30])["clear"]  # overlapping seeds
    text = seeds.table(folders, "heldout_hard", ("int_rl", "rl"))
    assert "int_rl | 50.0% | 60.0% | 55.0% | 55.0% | 10.0%" in text
    assert "base | 5.0% | - | - | 5.0% | -" in text
    assert "+16.7 points" in text and "above every seed of rl: yes" in text
    (tmp_path / "s1" / "rl" / "eval" / "summary_heldout_hard.json").write_text("{}")
    with pytest.raises(ValueError, match="s1/rl/eval/summary_heldout_hard.json: field 'pass_at_1'"):
        seeds.pass_at_1(folders, "heldout_hard")


def test_proposer_check_script_counts_the_committed_base():
    """benchmarks/running_sum_proposer.py runs on the committed base and its counts add
    up (the base writes parsable blocks, and copies a copy prompt)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "running_sum_proposer.py"),
                          str(root / "assets" / "running_sum" / "base"), "--n", "3",
                          "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["chats"] == 3 and counts["copy_prompts"] == 1
    assert counts["parsed"] >= 2 and 0 <= counts["fix_is_reference"] <= counts["parsed"]
    assert counts["first_wrong"] <= counts["parsed"] and counts["copied_exactly"] <= 1
