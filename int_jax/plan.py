"""`int-jax plan TARGET --config=configs/<file>.py:<arg>`: the memory plan of a run.

TARGET is a preset of `int_jax/launch/presets.py` (the launchers' table): a TPU slice
(`v5p-8`: 4 chips of 95 GiB, `v5p-32`, `v5p-128`, `v6e-8`, `v6e-64`) or a GPU node
(`8xh100`, `8xh200`; `8xh100:4` for four nodes). Prints, per device, the bytes of:
- configs that train (an `optim` section): the trainer's weights and optimizer state,
  and the train step (train/memory.py: gradients, accumulation, the remat policy's
  saved activations, the largest temporaries, measured on this CPU from XLA's memory
  analysis of one and two decoder layers and of the loss at one device's shapes);
- configs that sample (a `sampler` section): the sampler's weights (its own dtype and
  layout), the reserve left for step temporaries, the KV pool that remains, the
  sampler's largest step temporaries (its decode step and largest prefill call,
  compiled here for one layer; the CPU's paged kernel stands in for the target's
  Pallas kernel, which keeps less), and how many sequences the pool holds at
  sampler.max_len and at each section's lengths;
and whether the run fits. GRPO holds both at once: the learner's engine keeps its
weights and KV pool while the trainer updates, so the train step must fit in
`sampler.kv_reserve_bytes`. A pipeline config (configs/experiments/) is planned
section by section. Nothing is allocated: shapes come from `jax.eval_shape`, shardings
from the config's mesh and rules on an abstract mesh of the target.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

from ml_collections import ConfigDict

from int_jax.launch import presets

GIB = 1 << 30
# Prompt tokens assumed for sections that state no prompt limit.
ASSUMED_PROMPT = 1024
# Sections that sample: (section, key of its stated prompt limit, if any).
SECTIONS = (("rollout", None), ("propose", "context_limit"), ("continuation", None),
            ("reflect", "context_limit"), ("eval", None), ("grpo", "max_prompt_len"))


@dataclasses.dataclass
class Plan:
    target: str
    devices: int
    device_bytes: int  # what XLA may allocate on one device
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
    section: str = ""  # "" or the pipeline section ("sft.", "grpo.", ...)
    train: object = None  # train/memory.py TrainMemory, for configs that train
    reference: int = 0  # GRPO's frozen start weights (loss.kl_coef > 0)
    notes: list = dataclasses.field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def samples(self) -> bool:
        return bool(self.page_bytes)

    def lines(self) -> list[str]:
        gib = lambda b: f"{b / GIB:8.2f} GiB"  # noqa: E731
        where = f" [{self.section.rstrip('.')}]" if self.section else ""
        out = [f"memory plan{where} on {self.target}: {self.devices} devices, "
               f"{self.device_bytes / GIB:.2f} GiB usable on each"]
        out += [f"  note: {n}" for n in self.notes]
        if self.train is not None:
            out += [f"  trainer weights   {gib(self.trainer_weights)}",
                    f"  optimizer state   {gib(self.optimizer)}"]
            if self.reference:
                out.append(f"  KL reference      {gib(self.reference)}  (frozen start weights)")
            out += _train_lines(self.train, gib)
        if self.samples:
            out += [f"  sampler weights   {gib(self.sampler_weights)}",
                    f"  reserve           {gib(self.reserve)}  (sampler.kv_reserve_bytes)",
                    f"  KV pool           {gib(self.kv_pool)}  ({self.pages} pages of "
                    f"{self.page_bytes / 1024:.0f} KiB per device)"]
            for name, size in self.temporaries.items():
                out.append(f"  temporaries: {name:<24} {gib(size)}")
            if self.train is not None:
                out.append("  (GRPO: the sampler's weights and KV pool stay on the device during "
                           "an update, so the train step must fit in the reserve)")
            out.append(f"  decode rows: {self.rows} per shard x {self.shards} shards")
            for name, count in self.sequences.items():
                out.append(f"  sequences at once ({name}): {count}")
        out.append("  fits" if self.fits else "  DOES NOT FIT: " + "; ".join(self.problems))
        return out


def _train_lines(t, gib) -> list[str]:
    kernel = t.kernel if t.compiled_kernel in ("", t.kernel) else \
        f"{t.kernel} on the target, {t.compiled_kernel} compiled here in its place"
    out = [f"  train step ({t.kind}): {t.rows} row{'' if t.rows == 1 else 's'} x {t.seq_len} "
           "tokens per device per "
           f"micro-batch, {t.accum} micro-batches per update; remat {t.remat}; attention {kernel}",
           f"    gradients         {gib(t.gradients)}",
           f"    accumulation      {gib(t.accumulation)}",
           f"    optimizer update  {gib(t.update)}"]
    if t.measured:
        out += [f"    saved activations {gib(t.saved)}  ({t.layers} layers)",
                f"    layer backward    {gib(t.layer_backward)}  (one layer's temporaries, "
                "its gathered weights and their gradient)",
                f"    loss backward     {gib(t.loss_backward)}  (chunked logits, the "
                "projection's gathered weights and gradient)",
                f"    embedding, hidden {gib(t.boundary)}"]
    else:
        out.append("    (activations not measured)")
    out.append(f"    step peak         {gib(t.peak)}  (beyond weights and optimizer state)")
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


# Pipeline sections (configs/experiments/common.py) named after no stage: `int` holds
# the settings of every data stage.
TRAIN_AND_EVAL_STAGES = ("sft", "grpo", "eval")


def sections(config: ConfigDict) -> list[tuple[str, ConfigDict]]:
    """(key prefix, section) of every part of `config` that builds a model: the config
    itself, or each stage section of a pipeline config (`int.`, `sft.`, `grpo.`, ...)
    whose stages the row runs (`experiment.stages`)."""
    def builds(part) -> bool:
        return isinstance(part, ConfigDict) and isinstance(part.get("model"), ConfigDict)

    if builds(config):
        return [("", config)]
    experiment = config.get("experiment")
    stages = set(experiment.get("stages", ())) if isinstance(experiment, ConfigDict) else set()

    def runs(key: str) -> bool:
        if not stages:
            return True
        return key in stages if key in TRAIN_AND_EVAL_STAGES else bool(
            stages - set(TRAIN_AND_EVAL_STAGES))

    return [(f"{key}.", value) for key, value in config.items() if builds(value) and runs(key)]


def _architecture(model: ConfigDict, notes: list):
    from int_jax.models import factory, qwen3  # noqa: PLC0415

    path = str(model.hf_path or "")
    if path and (Path(path) / "config.json").is_file():
        return factory.model_config(model)
    if path:
        notes.append(f"model.hf_path={path} is not readable here: planned with "
                     f"model.preset={model.preset}")
    return qwen3.preset(model.preset)


def _training(config: ConfigDict):
    """(kind, micro-batch key, rows per micro-batch, rows per update, sequence length,
    loss chunk, packed rows) of a config that trains; None for one that does not."""
    if "optim" not in config:
        return None
    if "grpo" in config and "micro_batch" in config.grpo:
        g = config.grpo
        per_update = int(g.prompts_per_update) * int(g.n)
        return ("GRPO", "grpo.micro_batch", int(g.micro_batch) or per_update, per_update,
                int(g.max_prompt_len) + int(g.max_new_tokens), int(g.loss_chunk_size), False)
    t = config.train
    return ("SFT", "train.micro_batch", int(t.micro_batch) or int(t.global_batch),
            int(t.global_batch), int(config.data.cutoff_len), int(t.loss_chunk_size),
            bool(config.data.packing))


def plan(config: ConfigDict, target: str | presets.Target, *, measure: bool = True,
         measure_sampler: bool | None = None, section: str = "") -> Plan:
    """The plan of one config (one section of a pipeline: see `plan_all`). `measure`:
    compile the train step's pieces and (unless `measure_sampler` says otherwise) the
    sampler's steps; without it, shapes only."""
    from jax.sharding import AbstractMesh  # noqa: PLC0415

    from int_jax.models import factory  # noqa: PLC0415
    from int_jax.models import sharding as sharding_lib  # noqa: PLC0415

    if isinstance(target, str):
        target = parse_target(target)
    notes, problems = [], []
    arch = _architecture(config.model, notes)
    mesh_shape = sharding_lib.MeshConfig(**dict(config.model.mesh)).shape(target.devices)
    mesh = AbstractMesh(mesh_shape, sharding_lib.MESH_AXES)
    model_rules = factory.rules_of(config.model)
    state = _abstract_state(arch)
    device_bytes = target.chip.usable_bytes
    if target.chip.usable_fraction < 1:
        notes.append(f"{target.chip.usable_fraction:.0%} of each GPU's "
                     f"{target.chip.hbm_bytes / GIB:.2f} GiB is XLA's "
                     "(XLA_PYTHON_CLIENT_MEM_FRACTION, set by the GPU launcher)")
    out = Plan(target.name, target.devices, device_bytes, 0, 0, 0, 0, 0, 0, 0, 0, 0, {}, {},
               problems, section=section, notes=notes)

    training = _training(config)
    if training is not None:
        param_dtype = factory.dtype_of(config.model.param_dtype)
        out.trainer_weights = _state_bytes(state, model_rules, mesh, param_dtype)
        out.optimizer = _optimizer_bytes(config, state, model_rules, mesh)
        if training[0] == "GRPO" and float(config.loss.get("kl_coef", 0.0) or 0.0) > 0:
            out.reference = out.trainer_weights
        out.train = _train_memory(config, arch, training, target, mesh, model_rules,
                                  out.trainer_weights, measure, problems, section)
    state_bytes = out.trainer_weights + out.optimizer + out.reference
    sampler = config.get("sampler")
    if sampler is not None and sampler.get("kind", "jetstream") == "jetstream":
        _plan_sampler(out, config, arch, target, mesh, model_rules, state, state_bytes,
                      measure if measure_sampler is None else measure_sampler)
    elif out.train is not None and state_bytes + out.train.peak > device_bytes:
        t = out.train
        problems.append(
            f"the train step needs {t.peak / GIB:.2f} GiB per device beyond the weights and "
            f"optimizer state ({state_bytes / GIB:.2f} GiB): more than the "
            f"{device_bytes / GIB:.2f} GiB usable; lower config.{section}{training[1]} "
            f"(now {t.rows} rows per device)"
            + ("" if t.remat == "full" else f" or set config.{section}model.remat=full"))
    return out


@functools.lru_cache(maxsize=8)
def _abstract_state(arch):
    """The model's abstract weights (cached: a pipeline's sections share a model)."""
    from flax import nnx  # noqa: PLC0415

    from int_jax.models import qwen3  # noqa: PLC0415

    return nnx.split(nnx.eval_shape(lambda: qwen3.Qwen3(arch)))[1]


def _optimizer_bytes(config, state, rules, mesh) -> int:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from int_jax.train import optim  # noqa: PLC0415

    # The optimizer's per-parameter leaves (AdamW: two moments), shaped and sharded like
    # the parameters, in fp32.
    tx, _ = optim.make_optimizer(config.optim, 1)
    params = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, jnp.float32), state)
    moments = sum(x.size for x in jax.tree.leaves(jax.eval_shape(tx.init, params)) if x.ndim)
    count = sum(x.size for x in jax.tree.leaves(params))
    return _state_bytes(state, rules, mesh, jnp.float32) * moments // count


def _local(arch, rules, mesh):
    """The architecture as one device holds it: heads, MLP width and vocabulary divided
    by the mesh axes the rules split them over (whole where those do not divide)."""
    from int_jax.models import sharding as sharding_lib  # noqa: PLC0415

    def split(name: str, size: int) -> int:
        spec = sharding_lib.logical_to_spec((name,), rules, (size,), mesh)[0]
        axes = () if spec is None else (spec,) if isinstance(spec, str) else spec
        return size // math.prod(mesh.shape[a] for a in axes)

    return arch.replace(num_heads=split("q_heads", arch.num_heads),
                        num_kv_heads=split("kv_heads", arch.num_kv_heads),
                        intermediate_size=split("mlp", arch.intermediate_size),
                        vocab_size=split("vocab", arch.vocab_size))


def _train_memory(config, arch, training, target, mesh, rules, param_bytes, measure, problems,
                  section):
    from int_jax.models import factory  # noqa: PLC0415
    from int_jax.models import sharding as sharding_lib  # noqa: PLC0415
    from int_jax.train import memory  # noqa: PLC0415

    kind, key, micro, per_update, seq_len, chunk, packed = training
    m = config.model
    overrides = factory.execution_overrides(m, platform=target.chip.platform, packed=packed)
    kernel = overrides["attention_impl"]
    if per_update % micro:
        problems.append(f"config.{section}{key}={micro} does not divide the {per_update} rows "
                        "of an update")
    accum = max(per_update // micro, 1)
    try:
        spec = sharding_lib.logical_to_spec(("activation_batch",), rules, (micro,), mesh,
                                            indivisible="error")[0]
    except sharding_lib.ShardingError as e:
        problems.append(f"config.{section}{key}: {e}")
        spec = None
    axes = () if spec is None else (spec,) if isinstance(spec, str) else spec
    rows = micro // math.prod(mesh.shape[a] for a in axes)
    local = _local(arch, rules, mesh).replace(
        **{**overrides, "attention_impl": memory.kernel_here(kernel), "scan_layers": False})
    shape = memory.StepShape(local, rows, seq_len, str(m.dtype), chunk, kind == "GRPO") \
        if measure and not problems else None
    mem = memory.step_memory(kind=kind, arch=local, kernel=kernel, shape=shape,
                             layers=arch.num_layers, accum=accum, param_bytes=param_bytes)
    mem.rows, mem.seq_len = rows, seq_len
    return mem


def _plan_sampler(out: Plan, config, arch, target, mesh, model_rules, state, state_bytes,
                  measure) -> None:
    from int_jax.sampling import layout, paged  # noqa: PLC0415
    from int_jax.sampling.settings import SamplerSettings  # noqa: PLC0415

    settings = SamplerSettings.from_config(config.sampler).resolve(target.chip.platform)
    sampler_rules = layout.sampler_rules(model_rules, settings.rules)
    out.sampler_weights = _state_bytes(state, sampler_rules, mesh, settings.param_dtype)
    lay = paged.PoolLayout.build(arch, page_size=settings.page_size, pages_per_shard=1,
                                 dtype=settings.cache_dtype, slots=settings.slots, mesh=mesh,
                                 rules=sampler_rules)
    reserve = settings.kv_reserve_bytes
    pool = settings.kv_pool_bytes or out.device_bytes - state_bytes - out.sampler_weights - reserve
    pages = max(int(pool), 0) // lay.page_bytes
    rows = settings.slots // lay.shards
    width = -(-settings.max_len // settings.page_size)
    problems = out.problems
    if pages < width + 2:
        problems.append(f"the pool ({max(pool, 0) / GIB:.2f} GiB per device) holds less than one "
                        f"sequence of sampler.max_len={settings.max_len} (lower "
                        f"config.{out.section}sampler.max_len or kv_reserve_bytes, or use more "
                        "or larger chips)")

    def held(prompt: int, new: int) -> int:
        need = -(-prompt // settings.page_size) + (min(prompt + new, settings.max_len) - 1) \
            // settings.page_size - prompt // settings.page_size + 1
        return min(rows, pages // need) * lay.shards

    sequences = {"max_len": held(1, settings.max_len - 1)}
    for name, limit in SECTIONS:
        part = config.get(name)
        if part is not None and "max_new_tokens" in part:
            prompt = int(part[limit]) if limit else ASSUMED_PROMPT
            new = int(part.max_new_tokens)
            sequences[f"{name}: {prompt} prompt + {new} new"] = held(min(prompt, settings.max_len - new), new)

    # The pool's size does not change a step's temporaries: one compile serves any.
    compiled = settings.replace(kv_pool_bytes=0, kv_reserve_bytes=0)
    temporaries = dict(sampler_temporaries(arch, compiled, lay.shards, lay.tensor)) \
        if measure else {}
    for name, size in temporaries.items():
        if size > reserve:
            problems.append(f"{name} needs {size / GIB:.2f} GiB of temporaries, more than "
                            f"sampler.kv_reserve_bytes ({reserve / GIB:.2f} GiB)")
    if out.train is not None and out.train.peak > reserve:
        problems.append(
            f"the GRPO train step needs {out.train.peak / GIB:.2f} GiB per device while the "
            f"sampler's weights and KV pool stay resident; config.{out.section}sampler."
            f"kv_reserve_bytes is {reserve / GIB:.2f} GiB: raise it (the pool shrinks) or "
            f"lower config.{out.section}grpo.micro_batch")
    out.sampler_weights, out.reserve, out.kv_pool = out.sampler_weights, reserve, max(int(pool), 0)
    out.page_bytes, out.pages, out.shards, out.rows = lay.page_bytes, pages, lay.shards, rows
    out.temporaries, out.sequences = temporaries, sequences


@functools.lru_cache(maxsize=32)
def sampler_temporaries(arch, settings, shards: int, tensor: int) -> dict:
    """XLA's temporary bytes of one device's decode step and largest prefill call,
    compiled here for one layer at that device's shapes (cached: a pipeline's sampling
    sections share their settings)."""
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


def parse_target(text: str) -> presets.Target:
    """`v5p-8`, `8xh100`, or `8xh100:N` (N nodes)."""
    name, _, nodes = text.partition(":")
    try:
        return presets.target(name, int(nodes) if nodes else 1)
    except ValueError as e:
        if nodes and not nodes.isdigit():
            raise ValueError(f"plan target {text!r}: the node count after ':' must be an "
                             "integer") from None
        raise ValueError(f"plan target {text!r}: {e}") from None


def plan_all(config: ConfigDict, target: str | presets.Target, **options) -> list[Plan]:
    """One plan per section of `config` that builds a model (`sections`); `options` as
    `plan`'s."""
    found = sections(config)
    if not found:
        raise ValueError("this config builds no model (no `model` section): nothing to plan")
    return [plan(part, target, section=prefix, **options) for prefix, part in found]


def main(config: ConfigDict, args: list[str]) -> int:
    if len(args) != 1:
        raise SystemExit(f"int-jax plan takes one target ({', '.join(presets.TARGETS)}, "
                         f"or 8xh100:N for N nodes), got {args}")
    plans = plan_all(config, args[0])
    for p in plans:
        print("\n".join(p.lines()), flush=True)
    return 0 if all(p.fits for p in plans) else 1
