"""Multi-host GRPO's host side (train/multihost.py), with threads standing in for
processes: each process's block of a round, the gather of what each sampled (exact,
in group order, whatever the blocks' sizes), the slowest process's times, a block
sampled with the whole call's tags, and the learner's sampling phase split over two
"processes" giving one process's step. The real two-process run: test_multihost.py."""

import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import jax.numpy as jnp
import numerics
import numpy as np
import pytest
from ml_collections import ConfigDict

from int_jax.models import qwen3
from int_jax.sampling.sampler import JetStreamSampler
from int_jax.sampling.types import GRPO_SAMPLING, Completion
from int_jax.stages import grpo as stage
from int_jax.train import grpo, learner as L
from int_jax.train.multihost import Hosts, decode_groups, encode_groups

V = 64  # a tiny model over raw token ids
CFG = qwen3.Qwen3Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_layers=1,
                        num_heads=2, num_kv_heads=1, head_dim=16, max_position_embeddings=256)
MAX_LEN = 32


class ThreadGather:
    """An all-gather among `count` threads, each standing in for a process."""

    def __init__(self, count: int):
        self.count, self.slots = count, [None] * count
        self.barrier = threading.Barrier(count, timeout=120)

    def hosts(self, index: int) -> Hosts:
        def all_gather(values):
            self.slots[index] = np.asarray(values)
            self.barrier.wait()
            out = np.stack(self.slots)
            self.barrier.wait()  # nobody overwrites a slot before all have read
            return out

        return Hosts(index=index, count=self.count, all_gather=all_gather)


def run_processes(count: int, fn):
    """fn(hosts) in `count` threads, one per stand-in process; their results in order."""
    gather = ThreadGather(count)
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda p: fn(gather.hosts(p)), range(count)))


def random_groups(rng, groups: int, n: int):
    comps = [[Completion(tokens=[int(t) for t in rng.integers(0, 151936, k)], text="",
                         logprobs=[float(x) for x in -rng.exponential(size=k).astype(np.float32)],
                         model_logprobs=[float(x) for x in
                                         -rng.exponential(size=k).astype(np.float32)],
                         finish_reason=str(rng.choice(["stop", "length"])))
              for k in rng.integers(1, 7, n)] for _ in range(groups)]
    return comps, rng.normal(size=(groups, n))  # float64 rewards: no float32 round trip


@pytest.mark.parametrize("groups", range(10))
@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_blocks_cover_a_round_in_order_and_differ_by_at_most_one(groups, count):
    blocks = [Hosts(index=p, count=count).share(groups) for p in range(count)]
    assert [g for lo, hi in blocks for g in range(lo, hi)] == list(range(groups))
    sizes = [hi - lo for lo, hi in blocks]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("groups,count", [(5, 3), (2, 3), (4, 2), (1, 1)])
def test_every_process_gathers_every_group_exactly_in_order(groups, count):
    """(2, 3): a process with no group still takes part; rewards are float64 bit for bit,
    logprobs float32 bit for bit, timings the slowest process's."""
    n = 3
    comps, raw = random_groups(np.random.default_rng(groups * 10 + count), groups, n)

    def process(hosts: Hosts):
        lo, hi = hosts.share(groups)
        return hosts.gather(lo, comps[lo:hi], raw[lo:hi], (1.0 + hosts.index, 5.0 - hosts.index), n)

    for got, got_raw, seconds in run_processes(count, process):
        assert got_raw.dtype == np.float64 and np.array_equal(got_raw, raw)
        assert [[(c.tokens, c.logprobs, c.model_logprobs, c.finish_reason) for c in cs]
                for cs in got] == [[(c.tokens, c.logprobs, c.model_logprobs, c.finish_reason)
                                    for c in cs] for cs in comps]
        assert seconds == [float(count), 5.0]


def test_encoded_groups_round_trip_and_a_bad_block_is_refused():
    comps, raw = random_groups(np.random.default_rng(7), 2, 2)
    first, got, got_raw, seconds = decode_groups(encode_groups(6, comps, raw, (0.25,)))
    assert (first, seconds) == (6, [0.25]) and np.array_equal(got_raw, raw)
    assert [c.tokens for cs in got for c in cs] == [c.tokens for cs in comps for c in cs]
    with pytest.raises(ValueError, match="4 rewards for 2 groups x 1 samples"):
        encode_groups(0, [cs[:1] for cs in comps], raw, ())


def test_times_are_the_slowest_processes():
    got = run_processes(3, lambda h: h.slowest({"sync": 0.5 * h.index, "learn": 2.0 - h.index}))
    assert got == [{"sync": 1.0, "learn": 2.0}] * 3
    assert Hosts().slowest({"sync": 0.3}) == {"sync": 0.3}


def test_eval_during_training_is_refused_with_several_processes():
    c = ConfigDict(dict(train=ConfigDict(dict(eval_every=50))))
    stage.check_processes(c, 1)
    with pytest.raises(ValueError, match=r"config\.train\.eval_every=50") as e:
        stage.check_processes(c, 2)
    assert "\n" not in str(e.value)


# -- through the real engine ------------------------------------------------------------


def engine_sampler():
    """The real JetStream engine over the tiny model, fp32 weights and cache."""
    return JetStreamSampler(qwen3.create(CFG, seed=0), None, slots=16, max_len=MAX_LEN,
                            buckets=(8,), cache_dtype=jnp.float32, stop_ids=(V + 1,),
                            progress=False)


@pytest.fixture(scope="module")
def sampler():
    return engine_sampler()


def logprob_tol() -> float:
    """Two fp32 evaluations of a sampled token's logprob (temperature 1) in batches of
    other rows: the log-softmax bound of two forwards' logits (tests/numerics.py)."""
    model = qwen3.create(CFG, seed=0)
    return numerics.log_softmax_tol(numerics.qwen3_logit_tol(model, MAX_LEN),
                                    numerics.qwen3_logit_magnitude(model), V)


def assert_same_samples(got, want, tol):
    assert [[c.tokens for c in cs] for cs in got] == [[c.tokens for c in cs] for cs in want]
    assert [[c.finish_reason for c in cs] for cs in got] == [
        [c.finish_reason for c in cs] for cs in want]
    a = np.concatenate([c.logprobs for cs in got for c in cs])
    b = np.concatenate([c.logprobs for cs in want for c in cs])
    numerics.assert_within(a, b, tol, "sampler logprobs")


def test_a_block_sampled_with_its_first_tag_is_that_block_of_the_whole_call(sampler):
    rng = np.random.default_rng(3)
    prompts = [list(map(int, rng.integers(0, V, 6))) for _ in range(5)]
    n, new, seed = 3, 4, 11
    whole = sampler.generate(prompts, n, GRPO_SAMPLING, new, seed)
    block = sampler.generate(prompts[2:4], n, GRPO_SAMPLING, new, seed, first_tag=2 * n)
    assert_same_samples(block, whole[2:4], logprob_tol())
    other = sampler.generate(prompts[2:4], n, GRPO_SAMPLING, new, seed)  # tags 0.. instead
    assert [c.tokens for cs in other for c in cs] != [c.tokens for cs in block for c in cs]


def test_sampling_split_over_two_processes_is_one_processes_step(sampler):
    """Learner.sample with dynamic sampling (rounds of refills decided on the gathered
    rewards) on one process and split over two stand-in processes, each on its own
    engine: the same groups, samples, rewards, metrics and data position everywhere."""
    rng = np.random.default_rng(0)
    prompts = [list(map(int, rng.integers(0, V, 6))) for _ in range(16)]
    cfg = L.LearnerConfig(n=4, prompts_per_step=6, prompts_per_update=6, max_new_tokens=3,
                          max_prompt_len=8, loss_chunk_size=8, dynamic_sampling=True,
                          max_rounds=3, seed=0)

    def reward(items, completions):  # a first token divisible by 4: many groups all 0
        return np.array([[float(c.tokens[0] % 4 == 0) for c in cs] for cs in completions])

    # The sampling phase never touches the trainer; the learner only builds its forward.
    trainer = SimpleNamespace(forward=lambda fn: None)

    def learner(engine, hosts):
        return L.Learner(cfg, grpo.GRPOConfig(), trainer, engine, num_items=len(prompts),
                         prompt_fn=lambda item, pos: prompts[item], reward_fn=reward,
                         hosts=hosts)

    want = learner(sampler, Hosts()).sample(step=0)
    engines = [sampler, engine_sampler()]

    def process(hosts):
        lrn = learner(engines[hosts.index], hosts)
        return lrn.sample(step=0), lrn.progress()

    split = run_processes(2, process)
    timed = ("rollout/seconds", "rollout/tokens_per_s", "reward/seconds")
    assert want.metrics["rollout/rounds"] > 1  # refills happened, decided on gathered rewards
    for got, progress in split:
        assert got.items == want.items and got.prompts == want.prompts
        assert_same_samples(got.completions, want.completions, logprob_tol())
        assert np.array_equal(got.raw, want.raw) and np.array_equal(got.live, want.live)
        assert {k: v for k, v in got.metrics.items() if k not in timed} == {
            k: v for k, v in want.metrics.items() if k not in timed}
        assert progress["position"] == want.metrics["rollout/groups"]
