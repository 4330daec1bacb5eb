"""`int-jax plan TARGET --config=configs/<file>.py:<arg>`: the memory plan of a run.

Prints, per device of TARGET (`h100x8`, `h200x8`, `v5p-8`, `v6e-8`: eight chips of that
kind), the bytes of: the trainer's weights and optimizer state (configs that train:
an `optim` section), the sampler's weights (its own dtype and layout), the reserve left
for step temporaries, the KV pool that remains, and the sampler's largest step
temporaries; then how many sequences the pool holds at sampler.max_len and at each
section's lengths, and whether the run fits. Nothing is allocated: shapes come from
`jax.eval_shape`, shardings from the config's mesh and rules on an abstract mesh of
the target, temporaries from XLA's memory analysis of the sampler's decode step and
largest prefill call compiled on this machine (one layer: a step's temporaries are
those of one layer at a time; the decode step with the CPU's paged kernel standing in
for the target's Pallas kernel, which keeps less).
"""

from __future__ import annotations

import dataclasses
import math

from ml_collections import ConfigDict

GIB = 1 << 30
# Target: (devices, memory per device in bytes, platform).
TARGETS = {
    "h100x8": (8, 80 * GIB, "gpu"),
    "h200x8": (8, 141 * GIB, "gpu"),
    "v5p-8": (8, 95 * GIB, "tpu"),
    "v6e-8": (8, 32 * GIB, "tpu"),
}
# Prompt tokens assumed for sections that state no prompt limit.
ASSUMED_PROMPT = 1024
# Sections that sample: (section, key of its stated prompt limit, if any).
SECTIONS = (("rollout", None), ("propose", "context_limit"), ("continuation", None),
            ("reflect", "context_limit"), ("eval", None), ("grpo", "max_prompt_len"))


@dataclasses.dataclass
class Plan:
    target: str
    devices: int
    device_bytes: int
    trainer_weights: int
    optimizer: int
    sampler_weights: int
    reserve: int
    kv_pool: int
    page_bytes: int
    pages: int  # per device
    shards: int  # data-parallel shards of the pool (and of the decode rows)
    rows: int  # decode rows per shard
    temporaries: dict  # name -> bytes (empty when not measured)
    sequences: dict  # "max_len" or a section -> sequences the host holds at once
    problems: list

    @property
    def fits(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        gib = lambda b: f"{b / GIB:8.2f} GiB"  # noqa: E731
        out = [f"memory plan on {self.target}: {self.devices} devices of {self.device_bytes / GIB:.0f} GiB",
               f"  trainer weights   {gib(self.trainer_weights)}",
               f"  optimizer state   {gib(self.optimizer)}",
               f"  sampler weights   {gib(self.sampler_weights)}",
               f"  reserve           {gib(self.reserve)}  (sampler.kv_reserve_bytes)",
               f"  KV pool           {gib(self.kv_pool)}  ({self.pages} pages of "
               f"{self.page_bytes / 1024:.0f} KiB per device)"]
        for name, size in self.temporaries.items():
            out.append(f"  temporaries: {name:<24} {gib(size)}")
        if self.trainer_weights:
            out.append("  (the train step's temporaries are not measured here: during an update "
                       "the pool stays, so they must fit in the reserve)")
        out.append(f"  decode rows: {self.rows} per shard x {self.shards} shards")
        for name, count in self.sequences.items():
            out.append(f"  sequences at once ({name}): {count}")
        out.append("  fits" if self.fits else "  DOES NOT FIT: " + "; ".join(self.problems))
        return out


def _shard_bytes(shape, dtype_bytes: int, axes, rules, mesh) -> int:
    from int_jax.models import sharding as sharding_lib  # noqa: PLC0415

    spec = sharding_lib.logical_to_spec(axes, rules, shape, mesh) if axes else ()
    size = math.prod(shape)
    for entry in spec:
        for axis in (() if entry is None else (entry,) if isinstance(entry, str) else entry):
            size //= mesh.shape[axis]
    return size * dtype_bytes


def _state_bytes(state, rules, mesh, dtype) -> int:
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    variables = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    itemsize = np.dtype(dtype).itemsize
    return sum(_shard_bytes(v.get_value().shape, itemsize, getattr(v, "logical_axes", None),
                            rules, mesh) for v in variables)


def plan(config: ConfigDict, target: str, *, measure: bool = True) -> Plan:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415
    from jax.sharding import AbstractMesh  # noqa: PLC0415

    from int_jax.models import factory, qwen3  # noqa: PLC0415
    from int_jax.models import sharding as sharding_lib  # noqa: PLC0415
    from int_jax.sampling import layout, paged  # noqa: PLC0415
    from int_jax.sampling.settings import SamplerSettings  # noqa: PLC0415

    try:
        devices, device_bytes, platform = TARGETS[target]
    except KeyError:
        raise ValueError(f"unknown plan target {target!r}; choose one of {sorted(TARGETS)}") from None
    arch = qwen3.preset(config.model.preset) if not config.model.hf_path else factory.model_config(config.model)
    mesh_shape = sharding_lib.MeshConfig(**dict(config.model.mesh)).shape(devices)
    mesh = AbstractMesh(mesh_shape, sharding_lib.MESH_AXES)
    model_rules = factory.rules_of(config.model)
    settings = SamplerSettings.from_config(config.sampler).resolve(platform)
    abstract = nnx.eval_shape(lambda: qwen3.Qwen3(arch))
    state = nnx.split(abstract)[1]
    problems = []

    trainer = optimizer = 0
    if "optim" in config:
        trainer = _state_bytes(state, model_rules, mesh, factory.dtype_of(config.model.param_dtype))
        # AdamW keeps two moments per parameter, shaped and sharded like it (fp32 here).
        from int_jax.train import optim  # noqa: PLC0415

        tx, _ = optim.make_optimizer(config.optim, 1)
        params = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, jnp.float32), state)
        moments = sum(x.size for x in jax.tree.leaves(jax.eval_shape(tx.init, params)) if x.ndim)
        count = sum(x.size for x in jax.tree.leaves(params))
        optimizer = _state_bytes(state, model_rules, mesh, jnp.float32) * moments // count
    sampler_rules = layout.sampler_rules(model_rules, settings.rules)
    sampler_weights = _state_bytes(state, sampler_rules, mesh, settings.param_dtype)
    lay = paged.PoolLayout.build(arch, page_size=settings.page_size, pages_per_shard=1,
                                 dtype=settings.cache_dtype, slots=settings.slots, mesh=mesh,
                                 rules=sampler_rules)
    reserve = settings.kv_reserve_bytes
    pool = settings.kv_pool_bytes or device_bytes - trainer - optimizer - sampler_weights - reserve
    pages = max(int(pool), 0) // lay.page_bytes
    rows = settings.slots // lay.shards
    width = -(-settings.max_len // settings.page_size)
    if pages < width + 2:
        problems.append(f"the pool ({max(pool, 0) / GIB:.2f} GiB per device) holds less than one "
                        f"sequence of sampler.max_len={settings.max_len}")

    def held(prompt: int, new: int) -> int:
        need = -(-prompt // settings.page_size) + (min(prompt + new, settings.max_len) - 1) \
            // settings.page_size - prompt // settings.page_size + 1
        return min(rows, pages // need) * lay.shards

    sequences = {"max_len": held(1, settings.max_len - 1)}
    for name, limit in SECTIONS:
        section = config.get(name)
        if section is not None and "max_new_tokens" in section:
            prompt = int(section[limit]) if limit else ASSUMED_PROMPT
            new = int(section.max_new_tokens)
            sequences[f"{name}: {prompt} prompt + {new} new"] = held(min(prompt, settings.max_len - new), new)

    temporaries = sampler_temporaries(arch, settings, lay.shards, lay.tensor) if measure else {}
    for name, size in temporaries.items():
        if size > reserve:
            problems.append(f"{name} needs {size / GIB:.2f} GiB of temporaries, more than "
                            f"sampler.kv_reserve_bytes ({reserve / GIB:.2f} GiB)")
    return Plan(target, devices, device_bytes, trainer, optimizer, sampler_weights, reserve,
                max(int(pool), 0), lay.page_bytes, pages, lay.shards, rows, temporaries,
                sequences, problems)


def sampler_temporaries(arch, settings, shards: int, tensor: int) -> dict:
    """XLA's temporary bytes of one device's decode step and largest prefill call,
    compiled here for one layer at that device's shapes."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    from int_jax.models import qwen3  # noqa: PLC0415
    from int_jax.sampling import decode  # noqa: PLC0415

    local = arch.replace(num_layers=1, num_heads=arch.num_heads // tensor,
                         num_kv_heads=max(arch.num_kv_heads // tensor, 1),
                         intermediate_size=arch.intermediate_size // tensor,
                         vocab_size=arch.vocab_size // tensor)
    cpu = settings.replace(slots=settings.slots // shards, decode_kernel="blocked")
    core = decode.DecodeCore(nnx.eval_shape(lambda: qwen3.Qwen3(local)), cpu, pages_per_shard=2)
    params = nnx.split(core.abstract_model)[1]
    pool = jax.eval_shape(core.layout.zeros)
    state = jax.eval_shape(core._init_fn)
    rows = np.zeros(core.slots, np.int32)
    out = {"decode step": core._step.lower(params, pool, state, rows, rows)}
    chunk = core.buckets[-1]
    width = core._context_pages(core.longest_prompt)
    out[f"prefill ({chunk} tokens)"] = core._prefill.lower(
        params, pool, np.zeros((1, chunk), np.int32), np.zeros(1, np.int32),
        np.zeros(1, np.int32), np.zeros((1, width), np.int32))
    return {name: int(low.compile().memory_analysis().temp_size_in_bytes)
            for name, low in out.items()}


def main(config: ConfigDict, args: list[str]) -> int:
    if len(args) != 1:
        raise SystemExit(f"int-jax plan takes one target ({', '.join(sorted(TARGETS))}), got {args}")
    result = plan(config, args[0])
    print("\n".join(result.lines()), flush=True)
    return 0 if result.fits else 1
