"""`int-jax <command> --config=configs/<file>.py:<arg> --config.a.b=value ...`

Commands are looked up lazily in `COMMANDS` (module:function), so `int-jax
--help` does not import JAX-heavy modules. Every command function has the
signature `main(config: ConfigDict, args: list[str]) -> int | None`, where
`args` are the positional words after the command name.

Help (`int-jax --help`, `int-jax help [command]`, `int-jax <command> --help`) is
answered here, before absl parses flags: the command list, or a command's purpose
(its module's docstring, read without importing it), the config file it expects and
its main config keys with their defaults (read from that config file).

Errors in what the user gave (see `USER_ERRORS`) print one line
`int-jax <command>: <message>` to stderr and exit 2; anything else is a crash and
keeps its traceback, as does every error under `--verbosity=1` (or higher).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import importlib
import importlib.util
import inspect
import linecache
import logging
import re
import sys
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import ConfigDict, config_flags

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_DIR = _PACKAGE_DIR.parent  # where configs/ lives in a checkout


@dataclasses.dataclass(frozen=True)
class Command:
    target: str  # "module:function"
    summary: str  # one line, for the command list
    config: str = ""  # the --config it expects ("file.py:arg"); "" = none
    keys: tuple[str, ...] = ()  # config sections / keys whose defaults its help shows
    args: str = ""  # positional arguments, for its usage line
    own_options: bool = False  # parses its own --options from its args (absl passes them on)


_RUN = ("run.root", "run.name")
COMMANDS: dict[str, Command] = {
    "convert": Command("int_jax.models.convert:main", "convert checkpoints HF <-> orbax",
                       "configs/model.py:<preset>", ("convert", "preset", "dtype", "param_dtype")),
    "serve": Command("int_jax.sampling.serve:main", "JetStream gRPC server over the Qwen3 engine",
                     "configs/sampler.py:<preset>",
                     ("serve", "model.preset", "model.hf_path", "model.tokenizer_path", "sampler.slots",
                      "sampler.max_len", "sampler.max_prefill_length", "sampler.cache_dtype")),
    "data": Command("int_jax.data.command:main", "benchmark files: data fetch | data prepare",
                    args="fetch NAME DIR | prepare NAME FILE OUT.jsonl"),
    "rollout": Command("int_jax.stages.rollout:main", "sample and grade attempts per problem",
                       "configs/int.py:paper",
                       (*_RUN, "data", "model.preset", "model.hf_path", "model.tokenizer_path",
                        "sampler.kind", "sampler.slots", "sampler.max_len", "grading", "seed", "rollout")),
    "propose": Command("int_jax.stages.propose:main", "self-proposed interventions for failed attempts",
                       "configs/int.py:paper",
                       (*_RUN, "model.hf_path", "prompts", "steps", "propose")),
    "filter": Command("int_jax.stages.filter:main", "parse and filter proposals",
                      "configs/int.py:paper", (*_RUN, "steps", "filter")),
    "continue": Command("int_jax.stages.continuation:main", "counterfactual continuations, graded",
                        "configs/int.py:paper", (*_RUN, "model.hf_path", "grading", "steps", "continuation")),
    "select": Command("int_jax.stages.select:main", "keep verified interventions; write SFT examples",
                      "configs/int.py:paper", (*_RUN, "select")),
    "stats": Command("int_jax.stages.stats:main", "pipeline counts and the Table-1 view",
                     "configs/int.py:paper", _RUN),
    "reflect": Command("int_jax.stages.reflect:main", "SFT(Reflect) baseline data",
                       "configs/int.py:paper", (*_RUN, "model.hf_path", "prompts.reflect", "grading", "reflect")),
    "reference": Command("int_jax.stages.reference:main", "SFT(Ref) baseline data",
                         "configs/int.py:paper", (*_RUN, "rollout.select_hard")),
    "sft": Command("int_jax.stages.sft:main", "masked-prefix SFT",
                   "configs/sft.py:<model>[,<ablation>]",
                   ("model.preset", "model.hf_path", "model.tokenizer_path", "model.attention_impl",
                    "output_dir", "data", "train", "optim")),
    "eval": Command("int_jax.stages.evaluate:main", "sample benchmarks and report pass@k",
                    "configs/eval.py:paper",
                    (*_RUN, "model.preset", "model.hf_path", "model.tokenizer_path", "grading", "eval")),
    "grpo": Command("int_jax.stages.grpo:main", "GRPO from any checkpoint: the + RL of the paper's table",
                    "configs/grpo.py:<setting>[,hint]",
                    ("model.preset", "model.hf_path", "model.tokenizer_path", "init.orbax_path",
                     "output_dir", "data.problems", "grpo", "loss", "optim", "train", "hint")),
    "diagnostics": Command("int_jax.stages.diagnostics:main", "NLL / entropy of SFT sets",
                           "configs/diagnostics.py:<model>",
                           ("model.preset", "model.hf_path", "model.tokenizer_path", "data_path",
                            "output_dir", "cutoff_len", "chunk_size"), args="SFT.jsonl [...]"),
    "pipeline": Command("int_jax.stages.pipeline:main",
                        "every stage of one row of the paper's tables, in one run folder",
                        "configs/experiments/int_rl.py:<model>",
                        ("experiment", "workdir", "base_model", "problems", "hard", "reuse")),
    "report": Command("int_jax.eval.report.command:main", "the paper's tables and plots from run folders",
                      args="RUN_DIR... [--out DIR]", own_options=True),
    "plan": Command("int_jax.plan:main", "memory per device of a run on a target, allocating nothing",
                    "configs/grpo.py:paper", ("model.preset", "model.hf_path", "model.mesh", "sampler"),
                    args="v5p-8 | v5p-32 | v5p-128 | v6e-8 | v6e-64 | 8xh100[:NODES] | 8xh200[:NODES]"),
    "running-sum": Command("int_jax.running_sum.command:main",
                           "the running-sum miniature: its problem sets, base model, measures",
                           "configs/running_sum.py:default", ("out", "problems", "base"),
                           args="problems | base | measure RUN_DIR"),
    "demo": Command("int_jax.stages.demo:main", "the whole pipeline on the tiny built-in default",
                    "configs/demo.py:model", (*_RUN, "data.problems", "sampler.kind", "sampler.script")),
}

# What the command line reports as one line (exit 2) instead of a traceback: errors in
# what the user gave (config, paths, input records, templates, checkpoints), never
# bugs. Classes by "module.QualName" (subclasses count), so listing one imports
# nothing; a class whose module was never imported cannot have been raised.
# Besides these, a ValueError raised by a `raise` statement of int_jax's own code
# is a deliberate check of the user's input (`user_error_message`).
USER_ERRORS: tuple[str, ...] = (
    "builtins.FileNotFoundError",
    "builtins.NotADirectoryError",
    "builtins.IsADirectoryError",
    "int_jax.data.records.RecordError",
    "int_jax.stages.base.StageError",
    "int_jax.intervention.prompts.TemplateError",
    "int_jax.models.hf.CheckpointError",
    "int_jax.sampling.scripted.ScriptError",
)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "ml-collections config file, e.g. configs/sft.py:tiny", lock_config=True)

_HELP_FLAGS = {"-h", "--help", "-help", "--helpshort", "-helpshort", "-?"}
_VALUE_FLAGS = {"config", "verbosity", "v", "flagfile"}  # may take their value as the next word


# ---------------------------------------------------------------- help


def _usage() -> str:
    lines = ["usage: int-jax <command> --config=configs/<file>.py[:arg] [--config.KEY=VALUE ...] [args]",
             "       int-jax <command> --help     its purpose, config file and main config keys",
             "", "commands:"]
    lines += [f"  {name:<12} {cmd.summary}" for name, cmd in COMMANDS.items()]
    lines += ["", "A mistake in what you gave (a config key, a path, a record) prints one line and",
              "exits 2; --verbosity=1 prints the full traceback instead."]
    return "\n".join(lines)


def _find_config_file(path: str) -> Path | None:
    """A config path as the user gives it (relative to the working directory), else
    the same path in the checkout this package belongs to."""
    for candidate in (Path(path), _REPO_DIR / path):
        if candidate.is_file():
            return candidate
    return None


def _load_config_module(file: Path):
    spec = importlib.util.spec_from_file_location(f"_int_jax_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_spec(spec: str) -> tuple[object, ConfigDict]:
    """(module, config) of a `file.py[:arg]` spec, loaded as absl's config flag does."""
    path, _, arg = spec.partition(":")
    module = _load_config_module(Path(path))
    return module, (module.get_config(arg) if arg else module.get_config())


def _default_arg(get_config) -> str | None:
    params = list(inspect.signature(get_config).parameters.values())
    if params and params[0].default is not inspect.Parameter.empty:
        return str(params[0].default)
    return None


def flatten(config: ConfigDict, prefix: str = "") -> dict[str, object]:
    """Every leaf of a config by its dotted key (sorted within a section, as ConfigDict lists them)."""
    out: dict[str, object] = {}
    for key, value in config.items(preserve_field_references=False):
        if isinstance(value, ConfigDict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def select_keys(config: ConfigDict, selectors: tuple[str, ...]) -> tuple[dict[str, object], list[str]]:
    """The leaves under each selector (a section or a key), and the selectors the
    config does not have."""
    leaves = flatten(config)
    chosen: dict[str, object] = {}
    missing = []
    for sel in selectors:
        found = {k: v for k, v in leaves.items() if k == sel or k.startswith(sel + ".")}
        if not found:
            missing.append(sel)
        chosen.update(found)
    return chosen, missing


def _docstring(module_name: str) -> str:
    """A module's docstring, read from its source without importing it."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin:
        return ""
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text())) or ""


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line else "" for line in text.splitlines())


def command_config(name: str, spec: str | None = None) -> tuple[str, ConfigDict, str]:
    """(label, config, config file docstring) for a command's help: the `--config` the
    user gave when it loads, else the command's config file at its default arg.
    FileNotFoundError when that file is not here."""
    if spec:
        try:
            module, config = _load_spec(spec)
            return spec, config, module.__doc__ or ""
        except Exception:  # noqa: BLE001  (help shows the defaults instead)
            pass
    path = COMMANDS[name].config.partition(":")[0]
    file = _find_config_file(path)
    if file is None:
        raise FileNotFoundError(path)
    module = _load_config_module(file)
    arg = _default_arg(module.get_config)
    label = f"{path}:{arg}" if arg is not None else path
    return label, module.get_config(), module.__doc__ or ""


def command_help(name: str, spec: str | None = None) -> str:
    """What `int-jax <name> --help` prints (`spec`: the --config given, if any)."""
    cmd = COMMANDS[name]
    config_part = f" --config={cmd.config} [--config.KEY=VALUE ...]" if cmd.config else ""
    lines = [f"int-jax {name}: {cmd.summary}", "",
             f"usage: int-jax {name}{config_part}" + (f" {cmd.args}" if cmd.args else ""), ""]
    doc = _docstring(cmd.target.partition(":")[0])
    if doc:
        lines += [doc, ""]
    if not cmd.config:
        lines.append("This command takes no config file.")
        return "\n".join(lines)
    path = cmd.config.partition(":")[0]
    try:
        label, config, config_doc = command_config(name, spec)
    except FileNotFoundError:
        lines.append(f"config: {path} (not found here; run from the repository root to see its keys)")
        return "\n".join(lines)
    config_doc = config_doc.strip()
    lines += [f"config: {path}"] + ([_indent(config_doc), ""] if config_doc else [""])
    chosen, _ = select_keys(config, cmd.keys)
    lines.append(f"main config keys, values of {label} (set with --config.KEY=VALUE):")
    width = max((len(k) for k in chosen), default=0)
    lines += [f"  {key:<{width}} = {value!r}" for key, value in chosen.items()]
    lines += ["", "Every key: the config file. Tracebacks: --verbosity=1. absl's flags: --helpfull."]
    return "\n".join(lines)


def _unknown(command: str) -> str:
    return f"int-jax: unknown command {command!r}\n\n{_usage()}"


def _command_word(words: list[str]) -> str | None:
    """The first word that is neither a flag nor a flag's value."""
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--":
            return None
        elif word.startswith("-"):
            skip = "=" not in word and word.lstrip("-") in _VALUE_FLAGS
        else:
            return word
    return None


def _help(words: list[str], command: str | None) -> tuple[str, int] | None:
    """(text, exit code) when the words ask for help, else None."""
    head = words[: words.index("--")] if "--" in words else words
    asked = any(w in _HELP_FLAGS for w in head)
    if command == "help":
        command, asked = _command_word(words[words.index("help") + 1:]), True
    if not asked:
        return None
    if command is None:
        return _usage(), 0
    if command not in COMMANDS:
        return _unknown(command), 2
    return command_help(command, _config_spec(words)), 0


# ---------------------------------------------------------------- errors


def closest_key(key: str, keys) -> str | None:
    """The existing dotted key most like `key`: difflib over the whole keys and over
    their last parts (`train.lr` -> `optim.lr`), or None when nothing is close."""
    leaf = key.rpartition(".")[2]

    def score(candidate: str) -> float:
        whole = difflib.SequenceMatcher(None, key, candidate).ratio()
        last = difflib.SequenceMatcher(None, leaf, candidate.rpartition(".")[2]).ratio()
        return (whole + last) / 2

    best = max(keys, key=score, default=None)
    return best if best is not None and score(best) >= 0.5 else None


def _has_key(config: ConfigDict, key: str) -> bool:
    node = config
    for part in key.split("."):
        if not isinstance(node, ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def unknown_key_message(config: ConfigDict, key: str, where: str) -> str:
    near = closest_key(key, list(flatten(config)))
    hint = f"; did you mean '{near}'?" if near else ""
    return f"unknown config key '{key}' (not in {where}){hint}"


def _config_spec(argv: list[str]) -> str | None:
    spec = None
    for i, word in enumerate(argv):
        name, eq, value = word.lstrip("-").partition("=")
        if word.startswith("-") and name == "config":
            spec = value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    return spec


def _override_keys(argv: list[str]) -> list[str]:
    keys = []
    for word in argv:
        if not word.startswith("-"):
            continue
        name = word.lstrip("-").partition("=")[0]
        if name.startswith("noconfig."):
            name = name[2:]
        if name.startswith("config.") and "[" not in name:
            keys.append(name[len("config."):])
    return keys


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def _config_problem(spec: str, argv: list[str]) -> str | None:
    """What is wrong with the config the user gave, found by loading it ourselves:
    a missing file, an error of its get_config, or an unknown override key."""
    path = spec.partition(":")[0]
    if not Path(path).is_file():
        return f"config file not found: {path}"
    try:
        _, config = _load_spec(spec)
    except Exception as e:  # noqa: BLE001  (the config file is the user's input)
        return f"{spec}: {_one_line(e)}"
    for key in _override_keys(argv):
        if not _has_key(config, key):
            return unknown_key_message(config, key, spec)
    return None


def _verbosity(argv: list[str]) -> int:
    """--verbosity / -v as absl reads it, scanned before flags are parsed."""
    levels = {"debug": 1, "info": 0, "warning": -1, "error": -2, "fatal": -3}
    value = None
    for i, word in enumerate(argv):
        name, eq, v = word.lstrip("-").partition("=")
        if word.startswith("-") and name in ("verbosity", "v"):
            value = v if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return levels.get(str(value).lower(), 0)


def _raised_by_own_check(exc: BaseException) -> bool:
    """True for an exception raised by a `raise` statement in int_jax's own code."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    try:
        Path(filename).resolve().relative_to(_PACKAGE_DIR)
    except ValueError:
        return False
    return linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise")


def _is_listed(exc: BaseException) -> bool:
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}
    return not names.isdisjoint(USER_ERRORS)


def user_error_message(exc: BaseException) -> str | None:
    """The one line to print for a user error, or None for a crash."""
    if not (_is_listed(exc) or (isinstance(exc, ValueError) and _raised_by_own_check(exc))):
        return None
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    return _one_line(exc) or type(exc).__name__


# ---------------------------------------------------------------- running


def _quiet_third_party_logs() -> None:
    """Orbax and JAX log every checkpoint step at INFO through absl: show them
    WARNING and up unless `--verbosity` was given; int_jax's own INFO stays."""
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("int_jax").setLevel(logging.INFO)


def _fail(name: str, message: str) -> int:
    print(f"int-jax {name}: {message}", file=sys.stderr)
    return 2


def _parse_flags(argv: list[str], name: str) -> list[str]:
    """absl's flag parsing, with one-line errors for a bad config (file, key, value)."""
    verbose = _verbosity(argv) >= 1
    spec = _config_spec(argv)
    if spec is not None and not verbose:
        path = spec.partition(":")[0]
        if not Path(path).is_file():  # absl would defer this to the first use
            sys.exit(_fail(name, f"config file not found: {path}"))
    try:
        return flags.FLAGS(argv, known_only=COMMANDS[name].own_options)
    except Exception as e:
        if verbose:
            raise
        problem = _config_problem(spec, argv) if spec else None
        sys.exit(_fail(name, problem or _one_line(e)))


def _run(parsed: list[str], name: str) -> int:
    """`parsed`: the program, the command and its positional words (absl took the flags)."""
    _quiet_third_party_logs()
    args = parsed[2:]
    cmd = COMMANDS[name]
    config = _CONFIG.value
    if config is None and not cmd.config:
        config = ConfigDict()
    if config is None:
        return _fail(name, f"--config={cmd.config} is required (int-jax {name} --help)")
    module_name, fn_name = cmd.target.split(":")
    fn = getattr(importlib.import_module(module_name), fn_name)
    verbose = flags.FLAGS.verbosity >= 1
    try:
        return int(fn(config, args) or 0)
    except SystemExit as e:
        if isinstance(e.code, str) and not verbose:  # a command's own usage error
            print(e.code, file=sys.stderr)
            return 2
        raise
    except Exception as e:
        message = None if verbose else user_error_message(e)
        if message is None:
            raise
        return _fail(name, message)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    words = argv[1:]
    name = _command_word(words)
    answer = _help(words, name)
    if answer is None and name is None:
        answer = _usage(), 2
    elif answer is None and name not in COMMANDS:
        answer = _unknown(name), 2
    if answer is not None:
        text, code = answer
        print(text, file=sys.stdout if code == 0 else sys.stderr)
        sys.exit(code)
    app.run(lambda parsed: sys.exit(_run(parsed, name)), argv=argv,
            flags_parser=functools.partial(_parse_flags, name=name))


if __name__ == "__main__":
    main()
