"""Fault behaviour: an engine error mid-generation raises in the caller, never SIGKILLs,
and leaves every KV page free for the next call.

Run in a child process so that a regression to JetStream's os.kill(SIGKILL)
fails this test instead of killing pytest.
"""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp
    from int_jax.models import qwen3
    from int_jax.sampling.sampler import JetStreamSampler
    from int_jax.sampling.types import GREEDY, SamplerFailure

    model = qwen3.create(qwen3.preset("tiny", vocab_size=256))
    s = JetStreamSampler(model, None, slots=2, max_len=32, buckets=(8,), cache_dtype=jnp.float32,
                         stop_ids=(), progress=False, stall_timeout_s=60)
    prompts = [[1, 2, 3], [4, 5], [6]]
    good = s.generate(prompts, n=2, sampling=GREEDY, max_new_tokens=4, seed=0)

    engine = s.engine
    pages = engine.pages
    free = pages.free_pages()
    real_generate, real_prefill = engine.generate, engine.prefill_admitted
    calls = {"n": 0}
    def failing_generate(params, state, sampler=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise FloatingPointError("injected decode failure")
        return real_generate(params, state)
    def failing_prefill(params, admitted):
        raise MemoryError("injected prefill failure")
    for name, fake in [("generate", failing_generate), ("prefill_admitted", failing_prefill)]:
        setattr(engine, name, fake)
        try:
            s.generate(prompts, n=2, sampling=GREEDY, max_new_tokens=4, seed=0)
        except SamplerFailure as e:
            cause = e.__cause__
            assert cause is not None and "injected" in str(cause), e
            assert cause.__traceback__ is not None
            print("RAISED", type(cause).__name__)
        else:
            raise AssertionError("generate did not raise")
        # Every page and row is given back, even though the run never finished.
        assert pages.free_pages() == free and pages.pages_in_use() == 0 and not pages.bound
        setattr(engine, name, {"generate": real_generate, "prefill_admitted": real_prefill}[name])

    again = s.generate(prompts, n=2, sampling=GREEDY, max_new_tokens=4, seed=0)
    assert [[c.tokens for c in r] for r in again] == [[c.tokens for c in r] for r in good]
    import threading
    assert not [t for t in threading.enumerate() if t.name.startswith(("prefill", "generate", "detokenize", "transfer"))]
    print("SURVIVED")
""")


def test_engine_failure_raises_in_caller_and_next_generate_works():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"child exited with {proc.returncode} (-9 = SIGKILL):\n{out[-4000:]}"
    assert "RAISED FloatingPointError" in proc.stdout and "RAISED MemoryError" in proc.stdout
    assert "SURVIVED" in proc.stdout
