"""`int-jax grpo`'s settings and start weights: configs/grpo.py's paper / release / tiny
values, one-line errors naming the key, hint prompts, and starting from an HF folder,
an `int-jax convert` folder or a train run's orbax checkpoint."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from int_jax.data.records import Problem
from int_jax.models import convert, factory
from int_jax.stages import grpo as stage
from int_jax.stages.common import Context
from int_jax.train import optim
from int_jax.train.state import ModelDef
from int_jax.train.step import Trainer

ROOT = Path(__file__).resolve().parents[1]


def grpo_config(arg: str) -> ConfigDict:
    spec = importlib.util.spec_from_file_location("_grpo_config", ROOT / "configs" / "grpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_paper_settings_are_table_5():
    c = grpo_config("paper")
    lc, loss = stage.check_settings(c)
    assert (lc.prompts_per_step, lc.n, lc.prompts_per_update) == (32, 8, 16)
    assert (lc.temperature, lc.top_p, lc.top_k) == (1.0, 1.0, 0)
    assert (loss.kl_coef, loss.entropy_coef, loss.normalize_adv_by_std) == (0.0, 0.0, False)
    assert (c.optim.lr, c.train.steps) == (1e-6, 400)
    assert c.model.preset == "qwen3_4b_instruct_2507" and c.hint.mode == "off"


def test_release_settings_are_the_authors_rl_release():
    c = grpo_config("release")
    lc, loss = stage.check_settings(c)
    assert lc.temperature == loss.temperature == 0.8
    assert lc.prompts_per_update * lc.n == lc.prompts_per_step * lc.n == 256  # one update
    assert 1 + loss.clip_high == 4.0 and loss.old_logprobs == "sampler"  # ratio clip 4
    assert loss.entropy_coef == 1e-4 and loss.loss_agg_mode == "seq-mean-token-sum"
    assert (c.optim.grad_clip, c.optim.weight_decay, c.train.eval_every) == (0.3, 0.01, 50)
    assert not loss.normalize_adv_by_std


def test_tiny_and_hint_variants():
    stage.check_settings(grpo_config("tiny"))
    assert grpo_config("paper,hint").hint.mode == "fixed"
    with pytest.raises(ValueError, match="unknown arg"):
        grpo_config("paper,reflect")


@pytest.mark.parametrize("key,value,match", [
    ("loss.clip_low", 1.5, r"config\.loss\.clip_low"),
    ("loss.loss_agg_mode", "sum", r"config\.loss\.loss_agg_mode"),
    ("grpo.prompts_per_update", 3, r"config\.grpo\.prompts_per_update"),
    ("grpo.sampling.temperature", 0.0, r"config\.grpo\.sampling\.temperature"),
    ("train.steps", 0, r"config\.train\.steps"),
    ("hint.mode", "half", r"config\.hint\.mode"),
    ("grpo.max_new_tokens", 4096, r"exceeds config\.sampler\.max_len"),
    ("sampler.kind", "scripted", r"config\.sampler\.kind"),
])
def test_bad_settings_are_one_line_errors_naming_the_key(key, value, match):
    c = grpo_config("tiny")
    section, _, name = key.rpartition(".")
    node = c
    for part in section.split("."):
        node = node[part]
    node[name] = value
    with pytest.raises(ValueError, match=match) as e:
        stage.check_settings(c)
    assert "\n" not in str(e.value)


def test_sampler_logprobs_need_untruncated_sampling():
    c = grpo_config("release")
    c.grpo.sampling.top_p = 0.95
    with pytest.raises(ValueError, match="old_logprobs='sampler' needs untruncated"):
        stage.check_settings(c)


def test_hint_prompts_fixed_and_sampled(tmp_path):
    c = grpo_config("tiny,hint")
    ctx = Context(c)
    problems = [Problem(id="p", problem="What is 6 x 7?", answer="42",
                        reference_solution="Six sevens: 7 + 7 + 7 + 7 + 7 + 7 = 42.")]
    fixed = stage.Prompts(ctx, problems, c.hint, seed=0)
    text = ctx.decode(fixed(0, 0))
    assert "What is 6 x 7?" in text and "Six sevens: 7 + 7 + 7" in text and "= 42" not in text
    assert fixed(0, 5) == fixed(0, 0)  # a fixed fraction: the same prompt every visit
    c.hint.mode = "sampled"
    sampled = stage.Prompts(ctx, problems, c.hint, seed=0)
    lengths = {len(sampled(0, p)) for p in range(12)}
    assert len(lengths) > 1 and max(lengths) <= len(sampled.longest(problems[0]))
    assert sampled(0, 3) == sampled(0, 3)  # drawn per data position: resumable


def _params(model):
    return jax.device_get(ModelDef.split(model)[1])


def _tiny_model_config(**changes) -> ConfigDict:
    c = grpo_config("tiny")
    for k, v in changes.items():
        c.model[k] = v
    return c


def test_start_from_a_convert_folder_and_from_a_train_checkpoint(tmp_path):
    mesh = factory.build_mesh(ConfigDict(dict(mesh=dict(data=1, fsdp=-1, tensor=1))))
    source = factory.build_model(_tiny_model_config(seed=7).model, mesh)
    want = _params(source)
    # an `int-jax convert` folder
    convert.save_orbax(source, tmp_path / "orbax")
    c = _tiny_model_config()
    c.init.orbax_path = str(tmp_path / "orbax")
    got = _params(stage.load_start_model(c, mesh))
    assert sorted(got) == sorted(want)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    # a train run's checkpoints (SFT or GRPO output_dir/checkpoints): the latest step
    opt = ConfigDict(dict(lr=1e-3, warmup_ratio=0.0, min_lr_ratio=1.0, weight_decay=0.0,
                          b1=0.9, b2=0.999, eps=1e-8, grad_clip=1.0))
    tx, schedule = optim.make_optimizer(opt, 10)
    trainer = Trainer(factory.build_model(_tiny_model_config(seed=7).model, mesh), None, tx,
                      schedule, mesh, factory.rules_of(c.model), seed=0,
                      checkpoint_dir=tmp_path / "run" / "checkpoints", async_save=False)
    trainer.save(3)
    trainer.close()
    for path in (tmp_path / "run" / "checkpoints", tmp_path / "run" / "checkpoints" / "3"):
        c.init.orbax_path = str(path)
        got = _params(stage.load_start_model(c, mesh))
        assert all(np.array_equal(got[k], want[k]) for k in want)
    c.init.orbax_path = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="init.orbax_path"):
        stage.load_start_model(c, mesh)


def test_prompts_must_fit_the_samplers_prefill():
    c = grpo_config("tiny")
    c.grpo.max_prompt_len, c.sampler.max_len = 2000, 4096
    with pytest.raises(ValueError, match=r"config\.grpo\.max_prompt_len=2000 exceeds .*prefill"):
        stage.check_settings(c)


def test_a_micro_batch_the_mesh_cannot_split_fails_before_sampling(tmp_path, monkeypatch):
    """4 rows per micro-batch over 8 devices: named at start, before any sampling."""
    from int_jax.data.records import Problem, write_records
    from int_jax.models.sharding import ShardingError

    c = grpo_config("tiny")
    c.output_dir = str(tmp_path / "out")
    c.train.eval_every = 0
    c.data.problems = str(tmp_path / "p.jsonl")
    write_records(c.data.problems, [Problem(id=f"p{i}", problem=f"What is {i} + 1?", answer=str(i + 1))
                                    for i in range(4)])
    c.model.mesh.fsdp = 8
    assert c.grpo.n * c.grpo.prompts_per_update == 4  # rows per update, one micro-batch

    def no_sampler(*args, **kwargs):
        raise AssertionError("the sampler was built before the batch layout was checked")
    monkeypatch.setattr(stage, "build_sampler", no_sampler)
    with pytest.raises(ShardingError, match="activation_batch of size 4 cannot be split"):
        stage.run(c)
