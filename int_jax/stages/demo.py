"""`int-jax demo`: rollout -> propose -> filter -> continue -> select -> stats on the
tiny built-in default, in a few minutes on a CPU.

`configs/demo.py` (default): a random tiny Qwen3 with the real Qwen3 tokenizer,
sampled through the JetStream engine. Random weights write no parsable
intervention, so the funnel stops at the filter; the counts say so.
`configs/demo.py:scripted`: the same stages with the `ScriptedSampler` replaying
the script below, which walks the success path (rejections of every kind, a
repaired parse, verified and unverified interventions, an SFT set).

The demo writes its problems (and script) next to its outputs, shares one
model/sampler across stages, and is resumable like every stage: rerunning it
skips what finished.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ml_collections import ConfigDict

from int_jax.intervention.parse import parse_intervention
from int_jax.intervention.steps import StepFormat
from int_jax.stages import continuation, filter as filter_stage, propose, rollout, select, stats
from int_jax.stages.base import command
from int_jax.stages.common import context

PROBLEMS = [
    {"id": "sum10", "problem": "What is the sum of the first 10 positive integers?", "answer": "55",
     "reference_solution": "Pair 1 with 10, 2 with 9, and so on: five pairs, each summing to 11, "
                           "so the total is 5 * 11 = 55.", "source": "demo"},
    {"id": "linear", "problem": "Solve for x: 3x + 7 = 22.", "answer": "5",
     "reference_solution": "Subtracting 7 gives 3x = 15, and dividing by 3 gives x = 5.",
     "source": "demo"},
    {"id": "divisors36", "problem": "How many positive divisors does 36 have?", "answer": "9",
     "reference_solution": "36 = 2^2 * 3^2, so it has (2+1)(2+1) = 9 divisors.", "source": "demo"},
    {"id": "coins", "problem": "A fair coin is tossed twice. What is the probability of two heads? "
                               "Give a fraction.", "answer": "\\frac{1}{4}",
     "reference_solution": "The tosses are independent, so the probability is (1/2)(1/2) = 1/4.",
     "source": "demo"},
    {"id": "pow2", "problem": "Compute 2^10.", "answer": "1024",
     "reference_solution": "2^10 = 1024.", "source": "demo"},
]

# Per problem: the (wrong) attempt every rollout writes, the proposer's k=2 answers, and
# the continuations of the guided prefix. `pow2` is solved, so it yields no failures.
_ATTEMPTS = {
    "sum10": "We add the numbers 1 through 10.\n\nThe formula for the sum is n(n-1)/2.\n\n"
             "With n = 10 this gives 10 * 9 / 2 = 45.\n\nSo the answer is \\boxed{45}.",
    "linear": "Subtract 7 from both sides: 3x = 29.\n\nDivide by 3: x = 29/3.\n\n"
              "The answer is \\boxed{\\frac{29}{3}}.",
    "divisors36": "36 = 2^2 * 3^2.\n\nThe number of divisors is 2 * 2 = 4.\n\nSo \\boxed{4}.",
    "coins": "Each toss is heads with probability 1/2.\n\nAdding the two tosses gives 1/2 + 1/2 = 1."
             "\n\nSo \\boxed{1}.",
    "pow2": "2^10 = 1024.\n\nSo \\boxed{1024}.",
}


def _block(location, content) -> str:
    return "<intervention>" + json.dumps({"location": location, "content": content}) + "</intervention>"


_PROPOSALS = {  # proposal 0, proposal 1 (the first survivor is kept)
    "sum10": ["Step 2 uses the wrong formula. " + _block(2, "The formula n(n+1)/2 gives 55."),  # leaky
              "Step 2 is wrong. " + _block(2, "The formula for the sum of the first n positive "
                                              "integers is n(n+1)/2.")],
    "linear": ["The first error is in step 1.",  # no block
               "Step 1 is wrong.\n<intervention>{'location': 'Step 1', 'content': "
               "'Subtract 7 from both sides: 3x = 22 - 7.',}</intervention>"],  # repaired
    "divisors36": [_block(7, "Count exponents plus one."),  # location out of range
                   _block(2, "Each exponent can be 0, 1 or 2, giving (2+1)(2+1) = 9.")],  # leaky
    "coins": [_block(2, "Multiply: $\\frac{1}{2} \\cdot \\frac{1}{2} = \\frac{1}{4}$."),  # leaky
              _block(2, "The tosses are independent, so the probabilities multiply rather than add.")],
}
_CONTINUATIONS = {  # what the guided prefix leads to (m=2)
    "sum10": ["With n = 10 this gives 10 * 11 / 2.\n\nSo the answer is \\boxed{55}."],
    "linear": ["So 3x = 15 and x = \\boxed{5}.", "So x = \\boxed{6}."],
    "coins": ["So the answer is \\boxed{\\frac{1}{2}}."],  # never right: select drops it
}


def script_rules(problems=PROBLEMS, steps: StepFormat = StepFormat()) -> list[dict]:
    """`contains` rules, most specific first (see int_jax/sampling/scripted.py); `steps`
    labels the attempts as the proposer chat shows them."""
    rules = []
    for pid, outputs in _CONTINUATIONS.items():  # the intervention's text is only in its continuation
        content = parse_intervention(_PROPOSALS[pid][1]).content  # the kept (second) proposal
        rules.append({"contains": content, "outputs": outputs})
    for p in problems:
        first_step = steps.split(_ATTEMPTS[p["id"]])[0]
        if p["id"] in _PROPOSALS:  # the numbered attempt is only in the proposer chat
            rules.append({"contains": steps.number([first_step]), "outputs": _PROPOSALS[p["id"]]})
        rules.append({"contains": p["reference_solution"],  # turn 1: solve with the reference
                      "outputs": [p["reference_solution"] + f" The answer is \\boxed{{{p['answer']}}}."]})
        rules.append({"contains": p["problem"], "outputs": [_ATTEMPTS[p["id"]]]})  # rollouts, controls
    return rules


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def prepare(config: ConfigDict) -> None:
    """Write the demo's problems (and script) where its config points."""
    _write_jsonl(Path(config.data.problems), PROBLEMS)
    if config.sampler.kind == "scripted":
        _write_jsonl(Path(config.sampler.script),
                     script_rules(steps=StepFormat.from_config(config.steps)))


STAGES = (rollout, propose, filter_stage, continuation, select)


def run(config: ConfigDict) -> dict:
    prepare(config)
    with context(config) as ctx:
        for module in STAGES:
            module.run(config, ctx)
    report = stats.run(config)
    root = Path(config.run.root) / config.run.name
    print(f"\ndemo outputs: {root.resolve()}")
    for stage in ("rollout", "propose", "filter", "continue", "select", "stats"):
        print(f"  {stage:<9} {root / stage}")
    print(f"  SFT set   {root / 'select' / 'sft.jsonl'}")
    return report


main = command("demo", run)
