"""Defaults that reproduce the authors' release, and the README's fidelity table.

The table's last column names, for each step, the config switch to the other choice;
every one must be a real key of the config file it names, and must change its default.
"""

import json
import re
from pathlib import Path

import pytest

from int_jax.data.records import Rollout, read_records
from int_jax.intervention.steps import StepFormat
from int_jax.stages import continuation, demo, filter as filter_stage, propose, rollout
from int_jax.stages.common import Context

from test_stages_pipeline import ROOT, load_config, scripted_config

# The config file a switch names -> the argument that gives the paper's settings.
PAPER_ARG = {"int.py": "paper", "sft.py": "qwen3_4b_instruct_2507"}
_SWITCH = re.compile(r"`(\w+\.py): ([\w.]+)=([^`]*)`")


def fidelity_rows() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Fidelity to the authors' release", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]
    assert cells[0] == ["step", "authors' release", "our default", "switch to the other choice"]
    return cells[1:]  # past the header (the |---| line does not start with "| ")


def test_the_table_covers_the_steps_the_authors_release_fixes():
    steps = {row[0] for row in fidelity_rows()}
    for step in ("rollout prompt", "proposer, turn 1", "proposer, turn 3", "guided prefix",
                 "continuations", "leak test", "grader time limit", "SFT optimizer",
                 "SFT truncation"):
        assert step in steps


@pytest.mark.parametrize("row", fidelity_rows(), ids=lambda row: row[0])
def test_every_switch_is_a_real_config_key_that_changes_the_default(row):
    switches = _SWITCH.findall(row[3])
    if row[3] == "none":
        return
    assert switches, f"row {row[0]!r}: no `file.py: key=value` switch in {row[3]!r}"
    for file, key, value in switches:
        config = load_config(file, PAPER_ARG[file])
        node = config
        for part in key.split("."):
            assert part in node, f"{file}: {key} is not a config key (row {row[0]!r})"
            node = node[part]
        default = node
        if isinstance(default, bool):
            new = {"True": True, "False": False}[value]
        elif isinstance(default, (int, float)):
            new = type(default)(value)
        else:
            new = value.encode().decode("unicode_escape")  # `\n\n` in the table is a blank line
        assert new != default, f"{file}: {key}={value} is already the default"


def test_paper_defaults_are_the_authors():
    c = load_config("int.py", "paper")
    assert (c.prompts.problem, c.prompts.verify_attempt) == ("", "")
    assert (c.steps.split, c.steps.label, c.steps.double_newlines) == ("authors", "**Substep {i}:**", True)
    assert c.propose.guided_per == "attempt" and c.filter.leak_test == "substring"
    assert c.continuation.separator == "" and c.grading.timeout_s == 10.0
    assert load_config("sft.py", "qwen3_4b_instruct_2507").optim.weight_decay == 0.0


def test_paper_budgets_and_schedule_are_the_papers():
    """The paper's numbers (its method section and the authors' SFT script), written once
    in configs/int.py and sft.py; the `tiny` overrides never leak into `paper`."""
    c = load_config("int.py", "paper")
    assert c.model.preset == "qwen3_4b_instruct_2507" and c.run.name == "int"
    for name in ("rollout", "propose", "continuation", "reflect"):
        section = c[name]
        assert section.sampling.to_dict() == dict(temperature=0.7, top_p=0.8, top_k=20), name
        assert section.max_new_tokens == 16384, name
    assert c.propose.guided_max_new_tokens == 16384
    assert c.propose.context_limit == c.reflect.context_limit == 30000  # chats cut at 30k
    assert (c.rollout.n, c.continuation.m, c.reflect.n) == (4, 32, 1)
    sft = load_config("sft.py", "qwen3_4b_instruct_2507")
    assert (sft.optim.lr, sft.optim.warmup_ratio, sft.optim.min_lr_ratio) == (1e-6, 0.1, 0.1)
    assert (sft.train.epochs, sft.train.global_batch, sft.data.cutoff_len) == (4, 64, 16384)
    assert sft.train.tensorboard and sft.data.add_end_of_turn is False


def test_a_continuation_is_graded_on_its_own_text(tmp_path):
    """A `\\boxed{gold}` inside the prefix or the intervention never makes an unfinished
    continuation correct: only what the model wrote after the prefix is graded."""
    config = scripted_config(tmp_path)
    (tmp_path / "script.jsonl").write_text(
        json.dumps({"contains": "PREFIX-MARK", "outputs": ["and then I stopped."]}) + "\n"
        + json.dumps({"contains": "OTHER-MARK", "outputs": ["so it is \\boxed{55}."]}) + "\n")
    ctx = Context(config)
    try:
        chat = ctx.prompts.problem_chat("What is 5 * 11?")
        heads = ["PREFIX-MARK: we know it is \\boxed{55}.\n\n", "OTHER-MARK: compute.\n\n"]
        prompts = [ctx.encode(chat, h) for h in heads]
        (stopped,), (boxed,) = ctx.sample_graded(prompts, ["55", "55"], 1, config.continuation, 0)
    finally:
        ctx.close()
    assert stopped.completion.text == "and then I stopped." and not stopped.correct
    assert stopped.answer is None
    assert boxed.correct and boxed.answer == "55"


def test_unfinished_answers_of_the_table1_conditions():
    from int_jax.data.records import Intervention

    fmt = StepFormat()
    attempt = "a\nb\n\nwrong step\n\nc \\boxed{1}"
    steps = fmt.split(attempt)
    iv = Intervention(id="i", problem_id="p", rollout_id="r", proposal_id="q", location=2,
                      content="fixed\nstep", num_steps=len(steps))
    guided = filter_stage.GuidedAttempt(iv, *fmt.split_at(steps, 2),
                                        intervention_text=fmt.intervention_text(iv.content))
    heads = {cond: continuation.unfinished_answer(guided, cond, "") for cond in
             ("problem", "prefix", "original", "intervention")}
    assert heads == {"problem": "", "prefix": "a\nb\n\n", "original": "a\nb\n\nwrong step",
                     "intervention": "a\nb\n\nfixed\n\nstep"}
    assert heads["intervention"] == "\n\n".join(attempt.split("\n\n")[:1]) + "\n\n" + "fixed\n\nstep"
    assert continuation.unfinished_answer(guided, "prefix", "\n\n") == "a\nb\n\n\n\n"


@pytest.mark.parametrize("guided_per,count", [("attempt", 8), ("problem", 4)])
def test_guided_solutions_per_attempt_or_per_problem(tmp_path, guided_per, count):
    config = scripted_config(tmp_path)
    config.propose.guided_per = guided_per
    demo.prepare(config)
    rollout.run(config)
    manifest = propose.run(config)
    assert manifest["counts"]["guided"]["guided"] == count
    d = Path(config.run.root) / config.run.name / "propose"
    ids = [g.id for g in read_records(d / "guided.jsonl", Rollout)]
    attempts = read_records(Path(config.run.root) / config.run.name / "rollout" / "rollouts.jsonl",
                            Rollout)
    failed = [a for a in attempts if not a.correct]
    keys = [a.id if guided_per == "attempt" else a.problem_id for a in failed]
    assert ids == [f"{k}/guided" for k in dict.fromkeys(keys)]


def test_a_bad_guided_per_is_named(tmp_path):
    config = scripted_config(tmp_path)
    config.propose.guided_per = "batch"
    with pytest.raises(ValueError, match="config.propose.guided_per"):
        propose.run(config)
