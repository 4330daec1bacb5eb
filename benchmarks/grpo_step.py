"""GRPO step by phase: sampling, grading, learning and weight sync, and the learn phase
against a transformers + torch implementation of the same loss and AdamW step.

    python benchmarks/grpo_step.py                        # CPU: ~100M model, 32 x 8, 128 new
    python benchmarks/grpo_step.py --preset qwen3_4b --dtype bfloat16 --new 2048 \\
        --micro 8 --no-peer --out grpo_step_h200          # GPU: Qwen3-4B-shaped, bf16

Our side is the learner `int-jax grpo` runs (train/learner.py): the JetStream engine
samples `--prompts` random prompts x `--n` (no stop token, so every completion runs to
`--new` tokens), the project grader grades them against a gold answer (worker
processes, as in a run), then the old-policy logprobs, one AdamW update per mini-batch
of `--mini` prompts' groups, and `update_params`. Timed over `--steps` steps after one
warm-up step (compilation). Goal: weight sync < 2% of the step.

The peer (`--no-peer` skips it) runs the learn phase on the same packed batch with the
same weights in torch: a no-grad forward for pi_old, then per mini-batch forward +
backward of the same clipped loss (seq-mean-token-mean) over the same micro-batches,
gradient clipping and AdamW. Both learn phases are timed alternately in one process
(goal: ours >= 1x the peer). Results go to benchmarks/results/<out>.txt with the device.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PHASES = ("rollout/seconds", "reward/seconds", "train/seconds", "sync/seconds")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="", help="a qwen3 preset instead of the ~100M model")
    ap.add_argument("--dtype", default="float32", help="compute dtype (params stay fp32)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--mini", type=int, default=16, help="prompts' groups per update")
    ap.add_argument("--micro", type=int, default=16, help="rows per accumulation step")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="learn-phase timings per side")
    ap.add_argument("--remat", action="store_true")
    ap.add_argument("--attention", default="flash")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--out", default="grpo_step_cpu")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    from ml_collections import ConfigDict

    from int_jax.grading.verify import GraderPool, grade_batch
    from int_jax.models import qwen3
    from int_jax.models.sharding import DEFAULT_RULES, MeshConfig, make_mesh
    from int_jax.sampling.sampler import JetStreamSampler
    from int_jax.train import grpo, learner as learner_lib, optim
    from int_jax.train.step import Trainer

    base = qwen3.preset(args.preset) if args.preset else qwen3.Qwen3Config(**common.SMALL_100M)
    t_max = args.prompt_len + args.new
    cfg = base.replace(remat=args.remat, attention_impl=args.attention,
                       max_position_embeddings=max(t_max, 4096))
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
    rng = np.random.default_rng(0)
    prompts = [list(map(int, rng.integers(0, cfg.vocab_size, args.prompt_len)))
               for _ in range(4 * args.prompts)]

    def model():
        return qwen3.create(cfg, dtype=dtype, param_dtype=jnp.float32, seed=0)

    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1))
    sampler = JetStreamSampler(model(), None, slots=args.prompts * args.n, max_len=t_max,
                               buckets=(args.prompt_len,), stop_ids=(cfg.vocab_size + 1,),
                               progress=False)
    lc = learner_lib.LearnerConfig(n=args.n, prompts_per_step=args.prompts,
                                   prompts_per_update=args.mini, micro_batch=args.micro,
                                   max_new_tokens=args.new, max_prompt_len=args.prompt_len)
    loss = grpo.GRPOConfig()
    opt = ConfigDict(dict(lr=1e-6, warmup_ratio=0.0, min_lr_ratio=1.0, weight_decay=0.0,
                          b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0))
    tx, schedule = optim.make_optimizer(opt, 1000)
    trainer = Trainer(model(), grpo.sequence_loss(loss), tx, schedule, mesh, DEFAULT_RULES,
                      seed=0, checkpoint_dir="/tmp/int_jax_grpo_bench", async_save=False)
    pool = GraderPool(16)

    def reward(items, completions):  # the project grader, as `int-jax grpo` grades
        texts = [c.text for cs in completions for c in cs]
        grades = grade_batch([(t, "42") for t in texts], pool=pool, timeout_s=10.0)
        flat = np.array([1.0 if getattr(g, "value", g) == "correct" else 0.0 for g in grades])
        return flat.reshape(len(completions), -1)

    learner = learner_lib.Learner(lc, loss, trainer, sampler, num_items=len(prompts),
                                  prompt_fn=lambda i, p: prompts[i], reward_fn=reward)
    learner.step(0)  # warm-up: compiles the engine, the step and the forward
    rows = []
    for s in range(1, args.steps + 1):
        t0 = time.perf_counter()
        m = jax.device_get(learner.step(s))
        m["step_seconds"] = time.perf_counter() - t0
        rows.append(m)

    def med(key):
        return statistics.median(r[key] for r in rows)

    step_s = med("step_seconds")
    lines = [f"device: {common.device_name()}",
             f"model: {cfg.num_params / 1e6:.1f}M params, compute {args.dtype}, fp32 params; "
             f"{args.prompts} prompts x {args.n}, prompt {args.prompt_len} + {args.new} new "
             f"tokens, mini-batch {args.mini} groups, micro-batch {args.micro} rows",
             f"step: {step_s:.2f} s (median of {len(rows)})"]
    data = {"device": common.device_name(), "params": cfg.num_params, "dtype": args.dtype,
            "prompts": args.prompts, "n": args.n, "new_tokens": args.new, "step_s": step_s}
    for key in PHASES:
        lines.append(f"  {key.split('/')[0]:>8}: {med(key):8.3f} s  ({100 * med(key) / step_s:.1f}%)")
        data[key.replace("/", "_")] = med(key)
    sync_frac = med("sync/seconds") / step_s
    lines.append(f"sync fraction of the step: {100 * sync_frac:.2f}% (goal < 2%)")
    lines.append(f"sampling: {med('rollout/tokens_per_s'):.0f} tokens/s")
    data["sync_fraction"] = sync_frac

    # -- the learn phase against torch, on one step's batch ---------------------------
    sampled = learner.sample(args.steps + 1)
    batches = learner.batches(sampled)

    def ours():
        work = {k: v.copy() for k, v in batches.items()}
        learner.old_logprobs(work)
        learner.learn(work)
        jax.block_until_ready(trainer.state.params)

    ours()
    fns = {"ours": ours}
    if not args.no_peer:
        import torch

        peer = common.transformers_peer(trainer.model(), args.dtype).train()
        peer_opt = torch.optim.AdamW(peer.parameters(), lr=1e-6, weight_decay=0.0)
        dev = next(peer.parameters()).device
        u, a = batches["ids"].shape[:2]  # [updates, accum, rows, T]
        flat = {k: torch.tensor(batches[k], device=dev)
                for k in ("ids", "segment_ids", "mask", "advantages")}
        eps = loss.clip_low

        def logprobs(ids, seg):
            logits = peer(ids.long(), attention_mask=seg.long()).logits.float()
            lp = torch.log_softmax(logits[:, :-1], dim=-1)
            picked = lp.gather(-1, ids[:, 1:].long().unsqueeze(-1)).squeeze(-1)
            return torch.nn.functional.pad(picked, (0, 1))  # position t predicts t + 1

        def peer_learn():
            with torch.no_grad():
                old = [[logprobs(flat["ids"][i, j], flat["segment_ids"][i, j]) for j in range(a)]
                       for i in range(u)]
            for i in range(u):
                mask = flat["mask"][i]
                seqs = (mask.sum(-1) > 0).sum()
                for j in range(a):
                    m = mask[j]
                    lp = logprobs(flat["ids"][i, j], flat["segment_ids"][i, j])
                    ratio = torch.exp((lp - old[i][j]) * (m != 0))
                    adv = flat["advantages"][i, j][:, None]
                    per_tok = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - eps, 1 + eps))
                    per_seq = (per_tok * m).sum(-1) / m.sum(-1).clamp(min=1)
                    (per_seq.sum() / seqs).backward()
                torch.nn.utils.clip_grad_norm_(peer.parameters(), 1.0)
                peer_opt.step()
                peer_opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()

        peer_learn()  # warm-up (allocates optimizer state)
        fns["transformers"] = peer_learn
    timed = common.interleaved(fns, args.repeats)
    trained = float(batches["mask"].sum())
    for name, sec in timed.items():
        lines.append(f"learn phase {name:>13}: {sec:.2f} s ({trained / sec:.0f} trained tokens/s)")
        data[f"learn_{name}_s"] = sec
    if "transformers" in timed:
        ratio = timed["transformers"] / timed["ours"]
        lines.append(f"learn ratio ours / transformers: {ratio:.2f}x (goal >= 1.0x)")
        data["learn_ratio"] = ratio
    common.report_peak_memory(lines, data)
    pool.close()
    trainer.close()
    print("\n".join(lines))
    print(f"written to {common.write_result(args.out, lines, data)}")


if __name__ == "__main__":
    main()
