"""`int-jax sft`: masked-prefix SFT on the selected interventions, resumable.

Writes under `output_dir`: config.json, data_stats.json, metrics.jsonl (+
tensorboard/), checkpoints/ (orbax: state + data iterator), hf/ (the final
model as safetensors, with the tokenizer) and DONE (written last). With
`train.profile_steps=a,b` a profiler trace of steps a..b goes to
tensorboard/plugins/profile/ (TensorBoard's profile tab). Running it
again continues from the latest checkpoint (`train.resume`, default True).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path

import jax
from ml_collections import ConfigDict

from int_jax.config_io import save_config
from int_jax.data import loaders
from int_jax.data.tokenizer import load_model_tokenizer
from int_jax.data.toy_sft import toy_sft_examples
from int_jax.models import factory, hf
from int_jax.train import loop, metrics, optim, profile, sft
from int_jax.train import step as train_step

log = logging.getLogger(__name__)


def load_examples(config: ConfigDict, tokenizer):
    """Encoded examples and their stats from `data.train_path` (or the toy set)."""
    d = config.data
    if d.train_path:
        records = loaders.read_sft_jsonl(d.train_path)
    elif config.model.preset == "tiny" and not config.model.hf_path:
        records = [loaders.sft_record(e) for e in toy_sft_examples()]
    else:
        raise ValueError("data.train_path is empty: point it at the SFT JSONL "
                         "written by `int-jax select`")
    return loaders.encode_records(
        tokenizer, records, weights=dict(d.weights), cutoff_len=int(d.cutoff_len),
        truncation=str(d.truncation), add_end_of_turn=bool(d.add_end_of_turn),
        end_of_turn_weight=float(d.end_of_turn_weight))


def batch_spec(config: ConfigDict) -> loaders.BatchSpec:
    t = config.train
    micro = int(t.micro_batch) or int(t.global_batch)
    if int(t.global_batch) % micro:
        raise ValueError(f"train.global_batch={t.global_batch} is not a multiple of "
                         f"train.micro_batch={t.micro_batch}")
    return loaders.BatchSpec(rows=int(t.global_batch), accum=int(t.global_batch) // micro,
                             seq_len=int(config.data.cutoff_len),
                             packing=bool(config.data.packing), seed=int(config.data.seed),
                             epochs=int(t.epochs))


def check_execution(config: ConfigDict) -> None:
    """Settings that cannot work together, named before anything is built."""
    if config.data.packing and config.model.attention_impl == "cudnn":
        raise ValueError("model.attention_impl=cudnn takes rows of one example (it masks "
                         "padding by length); with data.packing=True use attention_impl=auto "
                         "(triton on GPU) or triton")


def main(config: ConfigDict, args: list[str]) -> int:
    if args:
        raise SystemExit(f"int-jax sft takes no positional arguments, got {args}")
    out = Path(config.output_dir)
    save_config(config, out)
    mesh = factory.build_mesh(config.model)
    rules = factory.rules_of(config.model)
    spec = batch_spec(config)
    check_execution(config)
    profile_steps = profile.parse_steps(config.train.get("profile_steps", ""))
    # Rows per micro-batch that the batch axes of the mesh do not divide are an error
    # now, not after the data and the model are loaded.
    train_step.batch_sharding(mesh, rules, (spec.accum, spec.rows // spec.accum, spec.seq_len))
    tokenizer = load_model_tokenizer(config.model)
    examples, stats = load_examples(config, tokenizer)
    (out / "data_stats.json").write_text(json.dumps(dataclasses.asdict(stats), indent=2) + "\n")
    log.info("SFT data: %s", stats)
    total = loaders.count_steps(examples, spec, jax.process_count(), jax.process_index())
    if int(config.train.max_steps) > 0:
        total = min(total, int(config.train.max_steps))
    if total < 1:
        raise ValueError(f"{len(examples)} examples make no full batch of "
                         f"{spec.rows}; lower train.global_batch")
    tx, schedule = optim.make_optimizer(config.optim, total)
    model = factory.build_model(config.model, mesh, packed_rows=bool(config.data.packing))
    model_cfg = model.config
    log.info("model: attention %s, remat %s", model_cfg.attention_impl, model_cfg.remat)
    data = iter(loaders.sft_dataset(examples, spec, process_index=jax.process_index(),
                                    process_count=jax.process_count()))
    loss_fn = functools.partial(sft.sft_loss, chunk_size=int(config.train.loss_chunk_size))
    opts = loop.LoopOptions(
        total_steps=total, workdir=out, seed=int(config.train.seed),
        save_every=int(config.train.save_every), keep=int(config.train.keep),
        log_every=int(config.train.get("log_every", 1)),
        async_save=bool(config.train.async_save), resume=bool(config.train.resume),
        tensorboard=bool(config.train.tensorboard), progress=bool(config.train.progress),
        profile_steps=profile_steps,
        flops_per_token=metrics.train_flops_per_token(model_cfg, spec.seq_len),
        peak_flops_per_device=metrics.peak_flops_per_device(
            override=float(config.train.peak_flops_per_device)))
    model, state = loop.train(model, loss_fn, tx, schedule, data, mesh, rules, opts)
    if config.train.export_hf:
        dtype = factory.dtype_of(config.train.export_dtype) if config.train.export_dtype else None
        hf.save_pretrained(model, out / "hf", dtype=dtype)
        if jax.process_index() == 0:
            tokenizer.save_pretrained(str(out / "hf"))
    if jax.process_index() == 0:
        (out / "DONE").write_text(json.dumps({"steps": int(jax.device_get(state.step))}) + "\n")
    return 0
