"""What a launcher does with an int-jax command before it creates or runs anything:
adds the target preset's settings, then checks the memory plan.

Settings (`preset_flags`), for every section of the command's config that builds a
model (the config itself, or each stage of a pipeline config; `plan.sections`): every
chip on `fsdp`, `model.distributed` on multi-host targets, and for a section that
trains the micro-batch (SFT `train.micro_batch`, GRPO `grpo.micro_batch`: the preset's
rows per chip times the chips) and, for GRPO, the sampler's reserve that holds the
train step (`presets.TrainSettings`). A key the command already sets is left as it is.

Then `int-jax plan` of that config on the target (`int_jax/plan.py`): its command line
and verdict are printed (in a dry run too: a `# plan: ` comment before the printed
commands), the table on stderr, and a plan that does not fit stops the launcher,
naming the reason, before any command is printed or run. `--skip-plan` launches
without the check; a command without `--config` has nothing to plan.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Sequence

from ml_collections import ConfigDict

from int_jax.launch import presets

SKIP_HELP = "launch without checking the memory plan (int-jax plan) of the command first"


def config_of(words: Sequence[str]) -> ConfigDict | None:
    """The config an int-jax command line builds (its `--config=FILE:ARG` and
    `--config.KEY=VALUE` words, parsed as the command parses them), or None when it
    names none."""
    from absl import flags  # noqa: PLC0415
    from ml_collections import config_flags  # noqa: PLC0415

    spec = next((w.split("=", 1)[1] for w in words if w.startswith("--config=")), None)
    if spec is None:
        return None
    path = spec.partition(":")[0]
    if not Path(path).is_file():
        raise SystemExit(f"config file not found: {path} (launchers run from the repository root)")
    argv = ["int-jax", *[w for w in words if w.startswith("--config")]]
    values = flags.FlagValues()
    # sys_argv: the overrides' flags are defined from the file these words name.
    config_flags.DEFINE_config_file("config", None, "the command's config", flag_values=values,
                                    lock_config=True, sys_argv=argv)
    try:
        values(argv)
    except Exception as e:  # absl's errors name the flag and the key
        raise SystemExit(f"the command's config: {e}") from None
    return values.config


def preset_flags(config: ConfigDict | None, target: presets.Target, *, distributed: bool,
                 given: Sequence[str] = ()) -> list[str]:
    """`--config.*` words putting `config` on `target` (see the module docstring),
    leaving out keys already set in `given`."""
    from int_jax import plan  # noqa: PLC0415

    if config is None:
        return []
    out = []
    for prefix, section in plan.sections(config):
        out += presets.mesh_flags(target.devices, prefix)
        if distributed:
            out.append(f"--config.{prefix}model.distributed=True")
        train = target.train
        if "optim" in section and "grpo" in section and "micro_batch" in section.grpo:
            out += [f"--config.{prefix}grpo.micro_batch={train.grpo_rows * target.devices}",
                    f"--config.{prefix}sampler.kv_reserve_bytes={train.grpo_reserve_gib << 30}"]
        elif "optim" in section and "micro_batch" in section.get("train", {}):
            out.append(f"--config.{prefix}train.micro_batch={train.sft_rows * target.devices}")
    keys = {w.split("=", 1)[0] for w in given}
    return [f for f in out if f.split("=", 1)[0] not in keys]


def prepare(words: Sequence[str], target: presets.Target, *, distributed: bool,
            skip_plan: bool, out=None, who: str = "launcher") -> list[str]:
    """The command's words with the preset's settings, after its plan was checked."""
    from int_jax import plan as plan_lib  # noqa: PLC0415

    out = out or sys.stdout
    words = list(words)
    config = config_of(words)
    words += preset_flags(config, target, distributed=distributed, given=words)
    if config is None:
        print("# plan: skipped (the command names no --config)", file=out)
        return words
    line = shlex.join([".venv/bin/int-jax", "plan", target.name,
                       *[w for w in words if w.startswith("--config")]])
    if skip_plan:
        print(f"# plan: {line}: skipped (--skip-plan)", file=out)
        return words
    plans = plan_lib.plan_all(config_of(words), target)
    for p in plans:
        print("\n".join(p.lines()), file=sys.stderr, flush=True)
    problems = [f"[{p.section.rstrip('.') or 'config'}] {problem}" for p in plans
                for problem in p.problems]
    if problems:
        raise SystemExit(f"{who}: the memory plan on {target.name} does not fit, so nothing was "
                         f"created or run: {'; '.join(problems)} (the plan: `{line}`; "
                         "--skip-plan launches anyway)")
    print(f"# plan: {line}: fits", file=out)
    return words
