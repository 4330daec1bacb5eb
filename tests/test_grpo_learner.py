"""The GRPO learner's phases (train/learner.py) and the loss in the one train step:
packing, scoring, data order, the first update's ratio through the real engine, dynamic
sampling, learning a verifiable reward, a sharded step against a single-device one."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numerics
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from int_jax.models import qwen3
from int_jax.models.sharding import DEFAULT_RULES, MeshConfig, make_mesh
from int_jax.sampling.sampler import JetStreamSampler
from int_jax.sampling.types import Completion
from int_jax.train import grpo, learner as L, optim
from int_jax.train.step import Trainer

V = 64  # vocabulary of the tiny model: prompts are raw token ids, no tokenizer
CFG = qwen3.Qwen3Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_layers=1,
                        num_heads=2, num_kv_heads=1, head_dim=16, max_position_embeddings=256)
PROMPT_LEN, MAX_NEW = 6, 3
PROMPTS = [list(map(int, np.random.default_rng(0).integers(0, V, PROMPT_LEN))) for _ in range(16)]
GOOD = frozenset(range(0, V, 4))  # the verifiable reward: the first token is a multiple of 4


def first_token_reward(items, completions):
    return np.array([[1.0 if c.tokens[0] in GOOD else 0.0 for c in cs] for cs in completions])


def learner_config(**changes) -> L.LearnerConfig:
    base = dict(n=8, prompts_per_step=4, prompts_per_update=2, max_new_tokens=MAX_NEW,
                max_prompt_len=8, loss_chunk_size=8, seed=0)
    return L.LearnerConfig(**{**base, **changes})


def one_device():
    return make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1])


def make_trainer(tmp_path, loss, lr=1e-2, mesh=None, seed=0, grad_clip=1.0) -> Trainer:
    opt = ConfigDict(dict(lr=lr, warmup_ratio=0.0, min_lr_ratio=1.0, weight_decay=0.0,
                          b1=0.9, b2=0.999, eps=1e-8, grad_clip=grad_clip))
    tx, schedule = optim.make_optimizer(opt, 1000)
    return Trainer(qwen3.create(CFG, seed=seed), grpo.sequence_loss(loss, 8), tx, schedule,
                   mesh or one_device(), DEFAULT_RULES, seed=0, checkpoint_dir=tmp_path / "ckpt",
                   async_save=False)


@pytest.fixture(scope="module")
def sampler():
    """The real JetStream engine over the tiny model, fp32 weights and cache."""
    return JetStreamSampler(qwen3.create(CFG, seed=0), None, slots=16, max_len=32, buckets=(8,),
                            cache_dtype=jnp.float32, stop_ids=(V + 1,), progress=False)


def completion(tokens, logprobs, finish="length") -> Completion:
    return Completion(tokens=list(tokens), text="", logprobs=list(logprobs),
                      model_logprobs=list(logprobs), finish_reason=finish)


# -- host-side phases ---------------------------------------------------------------


def test_pack_puts_each_completion_token_at_the_position_that_predicts_it():
    cfg = learner_config(n=2, prompts_per_step=2, prompts_per_update=2, micro_batch=2)
    prompts = [[5, 6, 7], [9, 10]]
    comps = [[completion([1, 2], [-0.1, -0.2]), completion([3], [-0.3], "stop")],
             [completion([4, 5, 6], [-0.4, -0.5, -0.6]), completion([7, 8], [-0.7, -0.8])]]
    adv = np.array([[0.5, -0.5], [1.0, -1.0]], np.float32)
    live = np.array([[True, True], [True, False]])  # the last one is masked (e.g. truncated)
    b = L.pack(prompts, comps, adv, live, cfg)
    t = cfg.seq_len
    assert b["ids"].shape == (1, 2, 2, t) and b["advantages"].shape == (1, 2, 2)
    ids, mask, old = (b[k].reshape(4, t) for k in ("ids", "mask", "old_logp"))
    assert ids[0, :5].tolist() == [5, 6, 7, 1, 2] and mask[0].tolist()[:5] == [0, 0, 1, 1, 0]
    assert old[0, 2:4].tolist() == pytest.approx([-0.1, -0.2])
    assert ids[2, :5].tolist() == [9, 10, 4, 5, 6] and np.nonzero(mask[2])[0].tolist() == [1, 2, 3]
    assert mask[3].sum() == 0 and b["segment_ids"].reshape(4, t)[3, :4].tolist() == [1] * 4
    assert b["advantages"].reshape(4).tolist() == [0.5, -0.5, 1.0, -1.0]
    # position t predicts token t + 1: exactly the completion tokens are targets
    targets = np.asarray(grpo.next_token_targets(jnp.asarray(ids)))
    assert targets[1][mask[1] != 0].tolist() == [3]
    assert b["positions"].reshape(4, t)[2, :5].tolist() == [0, 1, 2, 3, 4]


def test_pack_pads_a_short_step_to_whole_updates():
    cfg = learner_config(n=2, prompts_per_step=4, prompts_per_update=2)
    comps = [[completion([1], [-1.0])] * 2] * 3
    b = L.pack([[1, 2]] * 3, comps, np.ones((3, 2), np.float32), np.ones((3, 2), bool), cfg)
    assert b["ids"].shape[:3] == (2, 1, 4)  # 3 groups -> 2 updates of 2 groups, one padded
    assert b["mask"][1, 0, 2:].sum() == 0 and b["segment_ids"][1, 0, 2:].sum() == 0


def test_score_truncated_completions_three_ways():
    raw = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    cut = np.array([[False, True, True], [False, False, False]])
    r, live = L.score(raw, cut, learner_config(truncated="grade"))
    assert (r == raw).all() and live.all()
    r, live = L.score(raw, cut, learner_config(truncated="penalty", truncated_reward=-1.0))
    assert r[0].tolist() == [1.0, -1.0, -1.0] and live.all()
    r, live = L.score(raw, cut, learner_config(truncated="mask"))
    assert (r == raw).all() and live.tolist() == [[True, False, False], [True] * 3]
    assert L.informative(np.array([[1.0, 1.0], [0.0, 1.0], [0.5, 0.5]])).tolist() == [
        False, True, False]


def test_prompt_source_is_a_permutation_per_epoch_resumable_at_any_position():
    a = L.PromptSource(5, seed=3)
    first = [a.take(2) for _ in range(5)]  # 10 positions: two epochs
    items = [i for chunk in first for i, _ in chunk]
    assert sorted(items[:5]) == sorted(items[5:]) == list(range(5)) and items[:5] != items[5:]
    assert [p for chunk in first for _, p in chunk] == list(range(10))
    b = L.PromptSource(5, seed=3, position=3)
    assert [i for i, _ in b.take(7)] == items[3:]


def test_config_errors_name_the_key():
    for changes, key in [({"prompts_per_update": 3}, "config.grpo.prompts_per_update"),
                         ({"micro_batch": 5}, "config.grpo.micro_batch"),
                         ({"n": 1}, "config.grpo.n"),
                         ({"top_p": 0.0}, "config.grpo.sampling.top_p"),
                         ({"truncated": "drop"}, "config.grpo.truncated")]:
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            learner_config(**changes)
    with pytest.raises(ValueError, match="old_logprobs='sampler' needs untruncated"):
        L.check_compatible(learner_config(top_p=0.9), grpo.GRPOConfig(old_logprobs="sampler"))
    with pytest.raises(ValueError, match="temperature"):
        L.check_compatible(learner_config(temperature=0.8), grpo.GRPOConfig(temperature=1.0))


def test_mismatch_metrics_on_known_values():
    t = np.log(np.array([[0.5, 0.25, 0.9]]))
    s = np.log(np.array([[0.5, 0.20, 0.8]]))
    m = L.mismatch_metrics(t, s, np.array([[1, 1, 0]]))
    assert m["train/mismatch_logp_abs_max"] == pytest.approx(math.log(0.25 / 0.20))
    assert m["train/mismatch_logp_abs_mean"] == pytest.approx(math.log(1.25) / 2)
    assert m["train/mismatch_prob_corr"] == pytest.approx(1.0)  # two points: +-1


# -- through the engine ---------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_first_update_ratio_is_one_for_both_old_logprob_sources(tmp_path, sampler, temperature):
    """fp32 weights, cache and logits: at the first update of a step the policy is the
    one that sampled, so rho = pi / pi_old is 1 up to rounding (1e-4) whether pi_old is
    recomputed by the trainer or taken from the sampler's logprobs."""
    trainer = None
    for source in ("trainer", "sampler"):
        loss = grpo.GRPOConfig(temperature=temperature, old_logprobs=source)
        if trainer is None:
            trainer = make_trainer(tmp_path, loss, lr=1e-2)
        L.sync(trainer, sampler)
        learner = L.Learner(learner_config(temperature=temperature), loss, trainer, sampler,
                            num_items=len(PROMPTS), prompt_fn=lambda i, p: PROMPTS[i],
                            reward_fn=first_token_reward)
        m = jax.device_get(learner.step(0 if source == "trainer" else 1))
        assert m["train/updates"] == 2
        assert abs(m["train/first_ratio_max"] - 1) <= 1e-4, (source, m["train/first_ratio_max"])
        assert abs(m["train/first_ratio_min"] - 1) <= 1e-4, (source, m["train/first_ratio_min"])
        # the sampler's temperature-scaled logprobs are the trainer's, to rounding
        assert m["train/mismatch_logp_abs_max"] <= 1e-4
        assert m["train/mismatch_prob_corr"] > 0.999
        # the second update moves away from pi_old: the check above can fail
        assert m["train/ratio_max"] > m["train/first_ratio_max"]
        assert m["rollout/response_len_max"] == MAX_NEW and m["rollout/truncation_rate"] == 1.0
        assert {"rollout/seconds", "reward/seconds", "train/seconds", "sync/seconds",
                "rollout/tokens_per_s", "train/entropy", "train/clip_frac_low",
                "train/clip_frac_high", "train/approx_kl_old", "train/grad_norm",
                "reward/frac_all_wrong", "reward/frac_all_right"} <= set(m)


def test_dynamic_sampling_drops_uniform_groups_and_refills(tmp_path, sampler):
    """Even items always score 1 (uniform groups: dropped), odd ones by the first token."""

    def reward(items, completions):
        r = first_token_reward(items, completions)
        return np.array([np.ones_like(row) if item % 2 == 0 else row
                         for item, row in zip(items, r)])

    loss = grpo.GRPOConfig()
    trainer = make_trainer(tmp_path, loss)
    L.sync(trainer, sampler)
    cfg = learner_config(dynamic_sampling=True, max_rounds=3)
    learner = L.Learner(cfg, loss, trainer, sampler, num_items=len(PROMPTS),
                        prompt_fn=lambda i, p: PROMPTS[i], reward_fn=reward)
    sampled = learner.sample(0)
    m = sampled.metrics
    assert m["rollout/groups"] == m["rollout/groups_kept"] + m["rollout/groups_dropped"]
    assert m["rollout/groups_dropped"] >= 1 and m["rollout/rounds"] >= 2
    assert all(item % 2 == 1 for item in sampled.items)
    assert len(sampled.items) <= cfg.prompts_per_step and L.informative(sampled.rewards).all()
    assert learner.source.position == m["rollout/groups"]  # every sampled prompt consumed
    assert learner.counters["groups_dropped"] == m["rollout/groups_dropped"]


def _expected_reward(trainer) -> float:
    """P(first token in GOOD) under the current weights, averaged over the prompts (exact)."""
    model = trainer.model()
    probs = jax.nn.softmax(model(jnp.asarray(PROMPTS))[:, -1], axis=-1)
    return float(jnp.mean(jnp.sum(probs[:, sorted(GOOD)], axis=-1)))


@pytest.mark.slow
def test_learning_raises_a_verifiable_reward_and_lr_zero_does_not(tmp_path, sampler):
    """12 seeded steps of 4 prompts x 8 through the engine, reward 1 when the first
    completion token is a multiple of 4 (a quarter of the vocabulary: ~0.25 at the
    random start). Margins: at lr 1e-2 the exact expected reward rises by >= 0.35 and
    the sampled mean of the last 3 steps by >= 0.25 over the start; at lr 0 the weights
    do not move (bitwise) and the last 3 steps' sampled mean stays within 0.2 of it."""
    results = {}
    for lr in (1e-2, 0.0):
        loss = grpo.GRPOConfig()
        trainer = make_trainer(tmp_path / str(lr), loss, lr=lr)
        L.sync(trainer, sampler)
        start = _expected_reward(trainer)
        before = jax.device_get(trainer.state.params)
        learner = L.Learner(learner_config(), loss, trainer, sampler, num_items=len(PROMPTS),
                            prompt_fn=lambda i, p: PROMPTS[i], reward_fn=first_token_reward)
        sampled = [learner.step(s)["reward/mean"] for s in range(12)]
        results[lr] = (start, _expected_reward(trainer), float(np.mean(sampled[-3:])),
                       jax.device_get(trainer.state.params), before)
    start, end, last3, _, _ = results[1e-2]
    assert 0.15 < start < 0.35
    assert end >= start + 0.35, (start, end)
    assert last3 >= start + 0.25, (start, last3)
    start0, end0, last3_0, after0, before0 = results[0.0]
    assert start0 == start and end0 == start0
    assert all(np.array_equal(after0[k], before0[k]) for k in before0)
    assert abs(last3_0 - start0) < 0.2, (start0, last3_0)


# -- a sharded step ---------------------------------------------------------------------


def _grpo_batch(rng, rows=8, t=16):
    """Rows of 4 prompt tokens then 10 completion tokens (the last rows shorter)."""
    ids = rng.integers(0, V, (rows, t)).astype(np.int32)
    seg = np.ones((rows, t), np.int32)
    seg[-2:, 12:] = 0
    mask = np.zeros((rows, t), np.float32)
    mask[:, 3:13] = 1.0
    mask[-2:, 11:] = 0.0
    adv = rng.normal(0, 1, rows).astype(np.float32)
    positions = np.where(seg != 0, np.arange(t)[None], 0).astype(np.int32)
    return {"ids": ids, "positions": positions, "segment_ids": seg, "mask": mask,
            "advantages": adv}


def test_sharded_grpo_step_equals_single_device(tmp_path):
    """One update of the GRPO loss on 8 emulated devices (fsdp 4 x tensor 2) against one
    device, from the same weights and batch (pi_old: one fp32 evaluation of the trainer's
    logprobs, so rho = 1 up to rounding and no clip binds).

    Error analysis (tests/numerics.py): the gradient is sum_t c_t rho_t d log p_t, the
    SFT loss's chain with weights c_t rho_t (c_t = -A / (G |o_i|)), so two evaluations
    differ by 2 gamma_K |g|_max (K: qwen3_gradient_chain), plus rho's own difference:
    each rho = exp(log p - old) moves with log p, by at most the log-softmax bound d
    between two evaluations, a relative d (1 + d) + 2u of every term. The loss likewise
    (K: the forward chain, the vocabulary and the sum over tokens)."""
    assert jax.device_count() == 8, "conftest provides 8 emulated CPU devices"
    batch = _grpo_batch(np.random.default_rng(4))
    rows, t = batch["ids"].shape
    loss = grpo.GRPOConfig()
    sharded = make_mesh(MeshConfig(data=1, fsdp=4, tensor=2))
    results = []
    for mesh, name in ((one_device(), "one"), (sharded, "eight")):
        trainer = make_trainer(tmp_path / name, loss, lr=1e-3, mesh=mesh, seed=5, grad_clip=0.0)
        if not results:
            logp = trainer.forward(lambda model, micro: grpo.sequence_logprobs(
                model, micro, temperature=1.0, chunk_size=8)[0])
            old = np.asarray(logp({k: v[None] for k, v in batch.items()}))[0]
            batch["old_logp"] = np.where(batch["mask"] != 0, old, 0.0).astype(np.float32)
        metrics = trainer.update({k: v[None] for k, v in batch.items()})
        results.append((jax.device_get(trainer.state), jax.device_get(metrics), trainer))
    (s1, m1, t1), (s8, m8, t8) = results
    assert t8.shardings.params["layers/0/mlp/gate_proj"].spec == jax.sharding.PartitionSpec(
        "fsdp", "tensor")
    model = qwen3.create(CFG, seed=5)
    score = numerics.qwen3_score_bound(model)
    logit_tol = numerics.qwen3_logit_tol(model, t)
    d = numerics.log_softmax_tol(logit_tol, numerics.qwen3_logit_magnitude(model), V)
    rho = d * (1 + d) + 2 * numerics.U32
    # loss: sum over <= rows * t tokens of |c_t rho_t| <= the sum of |A| / G
    mag = float(np.abs(batch["advantages"]).sum() / rows) * (1 + rho)
    k_loss = numerics.qwen3_forward_chain(CFG, t, t - 1, score) + V + rows * t
    assert abs(m1["loss"] - m8["loss"]) <= numerics.reduction_tol(k_loss, mag) + rho * mag
    assert m1["train/tokens"] == m8["train/tokens"] == batch["mask"].sum()
    assert abs(m1["train/ratio_max"] - 1) < 1e-5 and m1["train/clip_frac_high"] == 0

    def adam(state):
        (a,) = [s for s in jax.tree.leaves(state.opt_state,
                                           is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
                if isinstance(s, optax.ScaleByAdamState)]
        return a

    k_grad = numerics.qwen3_gradient_chain(CFG, t, t - 1, score, rows * t)
    b1 = 0.9
    for name, mu in adam(s1).mu.items():
        g = np.asarray(mu, np.float64) / (1 - b1)
        g8 = np.asarray(adam(s8).mu[name], np.float64) / (1 - b1)
        big = float(np.abs(g).max())
        tol = numerics.leaf_tol(g, k_grad) + rho * big + 4 * numerics.U32 * np.abs(g)
        numerics.assert_within(g8, g, tol, f"gradient {name}")
    assert int(s8.step) == int(s1.step) == 1


def test_rows_are_as_long_as_the_step_needs():
    assert [L.row_length(n, 100) for n in (1, 16, 17, 33, 64, 65, 200)] == [
        16, 16, 32, 64, 64, 100, 100]
    cfg = learner_config(n=2, prompts_per_step=2, prompts_per_update=2, max_prompt_len=40,
                         max_new_tokens=60)
    comps = [[completion([1] * 20, [-1.0] * 20)] * 2] * 2
    b = L.pack([[1] * 30] * 2, comps, np.ones((2, 2), np.float32), np.ones((2, 2), bool), cfg)
    assert b["ids"].shape[-1] == 64  # 50 tokens, not max_prompt_len + max_new_tokens = 100


def test_kl_reference_truncated_is_and_entropy_bonus_run_through_the_step(tmp_path, sampler):
    """The optional terms: a frozen reference (built only with kl_coef > 0), truncated IS
    against the sampler's logprobs, the entropy bonus. At the first update the policy is
    the reference and the sampler's, so KL 0 and IS weights 1 (to rounding)."""
    loss = grpo.GRPOConfig(kl_coef=0.1, tis_cap=2.0, entropy_coef=1e-3)
    trainer = make_trainer(tmp_path, loss)
    L.sync(trainer, sampler)
    learner = L.Learner(learner_config(prompts_per_update=4), loss, trainer, sampler,
                        num_items=len(PROMPTS), prompt_fn=lambda i, p: PROMPTS[i],
                        reward_fn=first_token_reward)
    assert learner._reference is not None
    m = jax.device_get(learner.step(0))
    assert m["train/updates"] == 1
    assert abs(m["train/kl_ref"]) < 1e-6 and abs(m["train/is_weight_mean"] - 1) < 1e-4
    assert m["train/entropy"] > 0 and np.isfinite(m["train/loss"])
    # the reference stays the start weights while the policy moves
    m = jax.device_get(learner.step(1))
    assert m["train/kl_ref"] > 0
