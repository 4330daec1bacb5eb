"""The running-sum base's proposer and copy skill on fresh chats, without the pipeline.

Not a speed figure: a quick check of a rebuilt base (README "A miniature InT"). Greedy
answers (transformers, CPU) to N fresh verification chats of hard problems, made as
`base_data` makes them (a third with a non-carry slip) from a seed the training data
never uses: how many parse, name the checker's first wrong step, and write the
reference's step as the fix; and exact copies on N/3 fresh `copy` prompts.

    python benchmarks/running_sum_proposer.py assets/running_sum/base --n 100
"""

from __future__ import annotations

import argparse
import json
import random

from int_jax.intervention.parse import parse_intervention
from int_jax.running_sum import base_data, chat, checker, traces
from int_jax.running_sum.problems import HARD, draw, make_problem, reference_steps


def _generate(model, tok, messages, max_new_tokens: int) -> str:
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                  tokenize=True, return_dict=True)["input_ids"]
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", help="an HF folder: the base (or a round's sft/hf)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForCausalLM.from_pretrained(args.base).eval()
    rng = random.Random("running-sum-proposer-check")
    counts = dict(chats=0, parsed=0, first_wrong=0, fix_is_reference=0)
    while counts["chats"] < args.n:
        start, ops = draw(rng, HARD)
        failed = base_data.attempt_to_verify(start, ops, rng, traces.DROP, other_errors=0.3)
        if failed is None:
            continue
        steps = chat.step_format().split(failed)
        first = checker.check_steps(start, ops, steps).first_wrong
        messages = base_data.verify_chat(make_problem("check", start, ops), steps)
        parsed = parse_intervention(_generate(model, tok, messages, 320))
        counts["chats"] += 1
        if parsed.ok:
            counts["parsed"] += 1
            counts["first_wrong"] += parsed.location == first
            counts["fix_is_reference"] += parsed.content == reference_steps(start, ops)[first - 1]
    copies = exact = 0
    for i in range(max(1, args.n // 3)):
        ex = base_data.example("copy", i, rng, traces.DROP, 0.0)
        exact += _generate(model, tok, ex.messages, 200).strip() == ex.segments[0].text
        copies += 1
    counts.update(copy_prompts=copies, copied_exactly=exact)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
