"""`int-jax demo --config=configs/demo.py[:model|scripted]` (`make demo`).

`model`: the random tiny Qwen3 through the JetStream engine; `scripted`: the
success path replayed by the ScriptedSampler. Outputs: runs/demo[-scripted]/.
"""


def get_config(arg: str = "model"):
    import importlib.util
    from pathlib import Path

    if arg not in ("model", "scripted"):
        raise ValueError(f"configs/demo.py: unknown arg {arg!r}; use 'model' or 'scripted'")
    spec = importlib.util.spec_from_file_location("_int_config", Path(__file__).with_name("int.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config("tiny")
    c.run.name = "demo" if arg == "model" else "demo-scripted"
    root = f"{c.run.root}/{c.run.name}"
    c.data.problems = f"{root}/problems.jsonl"
    if arg == "scripted":
        c.sampler.kind = "scripted"
        c.sampler.script = f"{root}/script.jsonl"
        for section in (c.rollout, c.propose, c.continuation, c.reflect):
            section.max_new_tokens = 256
        c.propose.guided_max_new_tokens = 256
        c.propose.context_limit = c.reflect.context_limit = 4096
    return c
