"""A few synthetic SFT records (prefix / intervention / suffix) so `sft:tiny` runs
with no pipeline output at hand. Same JSONL layout as the `select` stage writes."""

from __future__ import annotations

from int_jax.data.records import Segment, SFTExample


def toy_sft_examples(n: int = 16) -> list[SFTExample]:
    out = []
    for i in range(n):
        a, b = 3 + i, 7 + 2 * i
        question = f"Compute {a} * {b} + {a}. Put the final answer in \\boxed{{}}."
        out.append(SFTExample(
            id=f"toy-{i}", problem_id=f"toy-problem-{i}",
            messages=[{"role": "user", "content": question}],
            segments=[
                Segment("prefix", f"Step 1: {a} * {b} = {a * b}.\n\n"),
                Segment("intervention", f"Step 2: Adding {a} gives {a * b} + {a} = {a * b + a}.\n\n"),
                Segment("suffix", f"So the answer is \\boxed{{{a * b + a}}}."),
            ]))
    return out
