"""A few synthetic SFT records (prefix / intervention / suffix) so `sft:tiny` runs
with no pipeline output at hand. Same JSONL layout as the `select` stage writes."""

from __future__ import annotations


def toy_sft_records(n: int = 16) -> list[dict]:
    out = []
    for i in range(n):
        a, b = 3 + i, 7 + 2 * i
        out.append({
            "id": f"toy-{i}",
            "prompt": f"Compute {a} * {b} + {a}. Put the final answer in \\boxed{{}}.",
            "segments": [
                {"kind": "prefix", "text": f"Step 1: {a} * {b} = {a * b}.\n\n"},
                {"kind": "intervention",
                 "text": f"Step 2: Adding {a} gives {a * b} + {a} = {a * b + a}.\n\n"},
                {"kind": "suffix", "text": f"So the answer is \\boxed{{{a * b + a}}}."},
            ],
        })
    return out
