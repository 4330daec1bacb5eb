"""`int-jax <command> --config=configs/<file>.py:<arg> --config.a.b=value ...`

Commands are looked up lazily in `COMMANDS` (module:function), so `int-jax
--help` does not import JAX-heavy modules. Every command function has the
signature `main(config: ConfigDict, args: list[str]) -> int | None`, where
`args` are the positional words after the command name.
"""

from __future__ import annotations

import importlib
import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

COMMANDS: dict[str, tuple[str, str]] = {
    # command: (module:function, one-line help)
    "convert": ("int_jax.models.convert:main", "convert checkpoints HF <-> orbax"),
    "serve": ("int_jax.sampling.serve:main", "JetStream gRPC server over the Qwen3 engine"),
    "data": ("int_jax.data.fetch:main", "data fetch NAME DIR: download a benchmark"),
    "rollout": ("int_jax.stages.rollout:main", "sample and grade attempts per problem"),
    "propose": ("int_jax.stages.propose:main", "self-proposed interventions for failed attempts"),
    "filter": ("int_jax.stages.filter:main", "parse and filter proposals"),
    "continue": ("int_jax.stages.continuation:main", "counterfactual continuations, graded"),
    "select": ("int_jax.stages.select:main", "keep verified interventions; write SFT examples"),
    "stats": ("int_jax.stages.stats:main", "pipeline counts and the Table-1 view"),
    "reflect": ("int_jax.stages.reflect:main", "SFT(Reflect) baseline data"),
    "reference": ("int_jax.stages.reference:main", "SFT(Ref) baseline data"),
    "sft": ("int_jax.stages.sft:main", "masked-prefix SFT"),
    "grpo": ("int_jax.stages.grpo:main", "GRPO from a checkpoint"),
    "eval": ("int_jax.stages.evaluate:main", "sample benchmarks and report pass@k"),
    "diagnostics": ("int_jax.stages.diagnostics:main", "NLL / entropy of SFT sets"),
    "demo": ("int_jax.stages.demo:main", "the whole pipeline on the tiny built-in default"),
}

# Commands that take no config file (their arguments are positional).
NO_CONFIG = {"data"}

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "ml-collections config file, e.g. configs/sft.py:tiny", lock_config=True)


def _usage() -> str:
    lines = ["usage: int-jax <command> --config=configs/<file>.py[:arg] [--config.x.y=v ...]", "",
             "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def _quiet_third_party_logs() -> None:
    """Orbax and JAX log every checkpoint step at INFO through absl: show them
    WARNING and up unless `--verbosity` was given; int_jax's own INFO stays."""
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("int_jax").setLevel(logging.INFO)


def _run(argv: list[str]) -> int:
    _quiet_third_party_logs()
    words = argv[1:]
    if not words or words[0] in ("help", "-h"):
        print(_usage())
        return 0 if words else 2
    name, args = words[0], words[1:]
    if name not in COMMANDS:
        print(f"int-jax: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module_name, fn_name = target.split(":")
    fn = getattr(importlib.import_module(module_name), fn_name)
    config = _CONFIG.value
    if config is None and name in NO_CONFIG:
        from ml_collections import ConfigDict

        config = ConfigDict()
    if config is None:
        print(f"int-jax {name}: --config=configs/<file>.py[:arg] is required", file=sys.stderr)
        return 2
    return int(fn(config, args) or 0)


def main() -> None:
    app.run(lambda argv: sys.exit(_run(argv)))


if __name__ == "__main__":
    main()
