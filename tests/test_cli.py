"""The `int-jax` command line: config files, overrides, the resolved config on disk."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from hf_checkpoints import make_hf_checkpoint
from safetensors.numpy import load_file

REPO = Path(__file__).resolve().parents[1]


def _int_jax(*args, cwd=REPO):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    return subprocess.run([sys.executable, "-m", "int_jax.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_convert_round_trip_via_cli_with_overrides(tmp_path):
    make_hf_checkpoint(tmp_path / "hf", seed=2)
    cfg = f"--config={REPO / 'configs/model.py'}:tiny"
    r = _int_jax("convert", cfg, f"--config.convert.src={tmp_path / 'hf'}",
                 f"--config.convert.dst={tmp_path / 'orbax'}")
    assert r.returncode == 0, r.stderr[-2000:]
    r = _int_jax("convert", cfg, "--config.convert.direction=orbax_to_hf",
                 f"--config.convert.src={tmp_path / 'orbax'}", f"--config.convert.dst={tmp_path / 'back'}")
    assert r.returncode == 0, r.stderr[-2000:]
    a = load_file(str(tmp_path / "hf" / "model.safetensors"))
    b = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # The resolved config, overrides included, sits next to the outputs.
    saved = json.loads((tmp_path / "back" / "run_config.json").read_text())
    assert saved["convert"]["direction"] == "orbax_to_hf"
    assert saved["preset"] == "tiny"


def test_unknown_command_and_bad_override_fail_clearly(tmp_path):
    r = _int_jax("frobnicate", f"--config={REPO / 'configs/model.py'}:tiny")
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr
    r = _int_jax("convert", f"--config={REPO / 'configs/model.py'}:tiny", "--config.no_such_key=1")
    assert r.returncode != 0 and "no_such_key" in r.stderr
    r = _int_jax("convert", f"--config={REPO / 'configs/model.py'}:gpt5")
    assert r.returncode != 0 and "gpt5" in r.stderr


def test_every_model_preset_is_a_transformers_qwen3_of_its_size():
    """`--config=configs/model.py:<preset>` gives, for every preset: a model with exactly
    the tensors (names and shapes, through the converter's rules) that transformers builds
    from the preset's config.json, so HF checkpoints of it load and saved ones load back;
    a config.json that round-trips through transformers; a forward that yields
    [B, T, vocab] logits; and the size its name says."""
    import jax
    import jax.numpy as jnp
    import torch
    import transformers
    from flax import nnx

    sys.path.insert(0, str(REPO))
    from configs import model

    from int_jax.models import factory, hf, qwen3

    sizes = {}
    for name in model.PRESETS:
        mc = model.get_config(name)
        cfg = factory.model_config(mc)
        hf_cfg = transformers.Qwen3Config(**cfg.to_hf())
        assert qwen3.Qwen3Config.from_hf(hf_cfg.to_dict(), **factory.execution_overrides(mc)) == cfg
        with torch.device("meta"):  # shapes only, no memory
            torch_model = transformers.Qwen3ForCausalLM(hf_cfg)
        hf_shapes = {n: tuple(t.shape) for n, t in torch_model.state_dict().items()}
        abstract = nnx.eval_shape(lambda: qwen3.Qwen3(cfg, rngs=nnx.Rngs(0)))
        ours = {tuple(path): v.get_value().shape
                for path, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
        mapped, names = set(), set()
        for rule in hf.WEIGHT_MAP:
            if rule.hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
                continue
            for layer in range(cfg.num_layers) if rule.per_layer else [None]:
                hf_name = rule.hf_name.format(i=layer)
                path = tuple(layer if key == "{i}" else key for key in rule.path)
                zeros = np.broadcast_to(np.float32(0), hf_shapes[hf_name])  # no memory either
                assert rule.to_ours(zeros, cfg).shape == ours[path], (name, hf_name)
                mapped.add(path)
                names.add(hf_name)
        tied = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
        assert mapped == set(ours) and names == set(hf_shapes) - tied, name
        assert cfg.num_params == sum(t.numel() for t in torch_model.parameters()), name
        logits = nnx.eval_shape(lambda m, ids: m(ids), abstract,
                                jax.ShapeDtypeStruct((2, 8), jnp.int32))
        assert logits.shape == (2, 8, cfg.vocab_size), name
        sizes[name] = cfg.num_params
    # Each name is its own architecture, of the size it names (qwen3_0_6b: 0.6e9 ...).
    assert len({factory.model_config(model.get_config(n)) for n in model.PRESETS}) == len(sizes)
    for name, n in sizes.items():
        if name != "tiny":
            billions = float(name.split("_", 1)[1].split("b")[0].replace("_", "."))
            assert abs(n / 1e9 - billions) <= 0.05 * billions, (name, n)


def test_data_fetch_offline_fails_clearly(tmp_path):
    r = _int_jax("data", "fetch", "amo_bench", str(tmp_path / "d"))
    assert r.returncode == 1 and "int-jax data fetch: cannot" in r.stderr, r.stderr[-1500:]
    r = _int_jax("data", "fetch")
    assert r.returncode == 2 and "usage: int-jax data fetch NAME DIR" in r.stderr


# ---- what a new user meets first: help, every listed command, one-line errors ----

_SCRIPT = Path(sys.executable).with_name("int-jax")  # the installed entry point


def _entry(*args, cwd=REPO):
    """The real `int-jax` console script (`python -m int_jax.cli` where none is installed)."""
    cmd = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "int_jax.cli"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_top_level_help_lists_the_commands():
    from int_jax.cli import COMMANDS

    for args in (["--help"], ["-h"], ["help"]):
        r = _entry(*args)
        assert r.returncode == 0, (args, r.stderr[-2000:])
        assert "absl" not in r.stdout and "USAGE" not in r.stdout
        for name, cmd in COMMANDS.items():
            assert f"  {name}" in r.stdout and cmd.summary in r.stdout
    r = _entry()
    assert r.returncode == 2 and "commands:" in r.stderr


def test_every_listed_command_imports_and_explains_itself():
    import importlib

    from int_jax.cli import COMMANDS, command_config, select_keys

    for name, cmd in COMMANDS.items():
        module_name, fn_name = cmd.target.split(":")
        assert callable(getattr(importlib.import_module(module_name), fn_name)), name
        r = _entry(name, "--help")
        assert r.returncode == 0, (name, r.stderr[-2000:])
        out = r.stdout
        assert out.startswith(f"int-jax {name}: {cmd.summary}") and f"usage: int-jax {name}" in out
        if not cmd.config:
            continue
        assert f"--config={cmd.config}" in out
        label, config, _ = command_config(name)
        chosen, missing = select_keys(config, cmd.keys)
        assert not missing, f"{name}: help lists keys its config lacks: {missing}"
        assert f"values of {label}" in out
        for key, value in chosen.items():
            assert f"  {key} " in out and repr(value) in out, (name, key)


def test_command_help_spellings_and_given_config():
    a, b = _entry("sft", "-h"), _entry("help", "sft")
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout
    assert "optim.lr" in a.stdout and "values of configs/sft.py:tiny" in a.stdout
    r = _entry("sft", "--config=configs/sft.py:qwen3_4b_instruct_2507", "--help")
    assert r.returncode == 0 and "values of configs/sft.py:qwen3_4b_instruct_2507" in r.stdout
    assert "data.cutoff_len" in r.stdout and "= 16384" in r.stdout
    r = _entry("help", "frobnicate")
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr


def _one_line_error(r, command):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"int-jax {command}: "), r.stderr[-3000:]
    return lines[0]


def test_wrong_config_key_names_it_and_the_closest_one():
    line = _one_line_error(_entry("sft", "--config=configs/sft.py", "--config.train.lr=1"), "sft")
    assert "unknown config key 'train.lr'" in line and "did you mean 'optim.lr'" in line
    line = _one_line_error(_entry("rollout", "--config=configs/int.py:tiny",
                                  "--config.rollout.temperature=1.0"), "rollout")
    assert "'rollout.temperature'" in line and "'rollout.sampling.temperature'" in line


def test_config_mistakes_are_one_line(tmp_path):
    line = _one_line_error(_entry("sft", "--config=configs/nope.py"), "sft")
    assert line == "int-jax sft: config file not found: configs/nope.py"
    line = _one_line_error(_entry("sft", "--config=configs/sft.py:tiny,no_such_ablation"), "sft")
    assert "unknown ablation 'no_such_ablation'" in line
    line = _one_line_error(_entry("sft", "--config=configs/sft.py", "--config.optim.lr=fast"), "sft")
    assert "optim.lr" in line and "'fast'" in line
    line = _one_line_error(_entry("sft"), "sft")
    assert "--config=configs/sft.py" in line


def test_input_mistakes_are_one_line_and_verbosity_keeps_the_traceback(tmp_path):
    good = '{"id": "p1", "problem": "What is 1+1?", "answer": "2"}\n'
    (tmp_path / "p.jsonl").write_text(good + '{"id": "p2", "problem": 3, "answer": "1"}\n')
    (tmp_path / "good.jsonl").write_text(good)
    (tmp_path / "bad.txt").write_text("Solve this.\n")  # the problem template lacks {{problem}}
    base = [f"--config={REPO / 'configs/int.py'}:tiny", "--config.run.root=runs",
            "--config.run.progress=False"]

    def rollout(*extra):
        return _entry("rollout", *base, *extra, cwd=tmp_path)

    line = _one_line_error(rollout("--config.data.problems=p.jsonl"), "rollout")
    assert line == "int-jax rollout: p.jsonl:2: field 'problem': expected str, got int"  # RecordError
    line = _one_line_error(rollout("--config.data.problems=nope.jsonl"), "rollout")
    assert "nope.jsonl" in line and "not found" in line
    line = _one_line_error(rollout("--config.data.problems=good.jsonl", "--config.prompts.problem=bad.txt"),
                           "rollout")
    assert "bad.txt" in line and "{{problem}}" in line  # TemplateError
    line = _one_line_error(_entry("filter", *base, cwd=tmp_path), "filter")  # StageError
    assert "rollout" in line and "first" in line
    r = rollout("--config.data.problems=p.jsonl", "--verbosity=1")
    assert r.returncode == 1 and "Traceback (most recent call last)" in r.stderr
    assert "RecordError: p.jsonl:2: field 'problem'" in r.stderr
    r = _entry("sft", "--config=configs/sft.py", "--config.train.lr=1", "--verbosity=1")
    assert r.returncode == 1 and "Traceback (most recent call last)" in r.stderr


def test_user_errors_are_named_in_one_place_and_crashes_are_not_user_errors():
    import importlib

    from int_jax.cli import USER_ERRORS, user_error_message
    from int_jax.data.records import RecordError

    for name in USER_ERRORS:
        module, _, cls = name.rpartition(".")
        assert issubclass(getattr(importlib.import_module(module), cls), BaseException), name

    def raised(fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            return e
        raise AssertionError("did not raise")

    assert user_error_message(RecordError("expected str", path="p.jsonl", line=2, field="x")) is not None
    assert user_error_message(raised(lambda: open("/no/such/file"))) == \
        "No such file or directory: /no/such/file"
    # a deliberate check in int_jax's own code (a `raise ValueError`) is the user's mistake ...
    from int_jax.model_config import model_config

    assert "unknown model preset" in user_error_message(raised(lambda: model_config("gpt5")))
    # ... a ValueError or KeyError from anywhere else is a crash: traceback kept
    assert user_error_message(raised(lambda: int("x"))) is None
    assert user_error_message(raised(lambda: {}["k"])) is None
    assert user_error_message(raised(lambda: np.zeros(3).reshape(2))) is None


def test_closest_key():
    from int_jax.cli import closest_key

    keys = ["optim.lr", "train.keep", "train.seed", "model.hf_path", "rollout.sampling.temperature",
            "propose.sampling.temperature", "rollout.n"]
    assert closest_key("train.lr", keys) == "optim.lr"
    assert closest_key("model.hf_pth", keys) == "model.hf_path"
    assert closest_key("rollout.temperature", keys) == "rollout.sampling.temperature"
    assert closest_key("zzzzzz.qqqqq", keys) is None
