"""The chats the pipeline sends to the model, rendered from template files.

Templates are plain text with `{{name}}` placeholders (LaTeX braces and `$` need
no escaping). The built-in ones live in `int_jax/intervention/templates/`; a
config can point any of them at another file (`config.prompts.<name>`), or at a
built-in variant by its name: `problem_with_instruction` (the problem plus an
instruction to reason step by step and box the answer) and `verify_attempt_short`
(the proposer's task without the verification log and self-check). The defaults
follow the authors' release: the raw problem, and the long verification task.
`problem_with_hint` is the prompt of hint-guided RL (the paper's baseline row): the
problem and the first part of its reference solution (`hint_prefix`).

Substituted values are inserted verbatim and never rescanned, so a problem or a
model answer that itself contains `{{...}}` is left alone.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Mapping

TEMPLATE_DIR = Path(__file__).parent / "templates"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

# name -> placeholders it must contain (and the only ones it may contain).
PLACEHOLDERS: Mapping[str, frozenset[str]] = {
    "problem": frozenset({"problem"}),
    "solve_with_reference": frozenset({"problem", "reference_solution"}),
    "verify_attempt": frozenset({"numbered_attempt"}),
    "reflect": frozenset({"problem", "reference_solution", "attempt"}),
    "problem_with_hint": frozenset({"problem", "hint"}),
}
OPTIONAL: Mapping[str, frozenset[str]] = {
    "verify_attempt": frozenset({"problem"}),
}

Message = dict[str, str]


class TemplateError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Template:
    name: str
    text: str
    source: str  # file it came from, for error messages

    def render(self, **values: str) -> str:
        def sub(m: re.Match) -> str:
            key = m.group(1)
            if key not in values:
                raise TemplateError(f"{self.source}: placeholder {{{{{key}}}}} has no value")
            value = values[key]
            if not isinstance(value, str):
                raise TemplateError(f"{self.source}: value for {{{{{key}}}}} must be a string")
            return value

        return _PLACEHOLDER.sub(sub, self.text)


def _template_file(name: str, path: str | Path | None) -> Path:
    """`path` empty/None: the built-in file; a bare name of a built-in file (no folder,
    no suffix): that variant; anything else: a file path."""
    if not path:
        return TEMPLATE_DIR / f"{name}.txt"
    path = str(path)
    builtin = TEMPLATE_DIR / f"{path}.txt"
    if "/" not in path and "." not in path and builtin.exists():
        return builtin
    return Path(path)


def load_template(name: str, path: str | Path | None = None) -> Template:
    """Read and check one template (see `_template_file` for what `path` may be)."""
    if name not in PLACEHOLDERS:
        raise TemplateError(f"unknown template {name!r}; known: {sorted(PLACEHOLDERS)}")
    file = _template_file(name, path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise TemplateError(f"{file}: cannot read template {name!r}: {e}") from e
    found = {m.group(1) for m in _PLACEHOLDER.finditer(text)}
    required = PLACEHOLDERS[name]
    missing = required - found
    unknown = found - required - OPTIONAL.get(name, frozenset())
    if missing:
        raise TemplateError(f"{file}: template {name!r} lacks placeholder(s) "
                            + ", ".join(f"{{{{{k}}}}}" for k in sorted(missing)))
    if unknown:
        raise TemplateError(f"{file}: template {name!r} has unknown placeholder(s) "
                            + ", ".join(f"{{{{{k}}}}}" for k in sorted(unknown)))
    return Template(name=name, text=text.strip("\n"), source=str(file))


@dataclasses.dataclass(frozen=True)
class PromptSet:
    """All templates one run uses."""

    problem: Template
    solve_with_reference: Template
    verify_attempt: Template
    reflect: Template
    problem_with_hint: Template

    @classmethod
    def load(cls, paths: Mapping[str, str] | None = None) -> "PromptSet":
        """`paths` maps template name -> file ('' = built-in); e.g. `config.prompts`."""
        paths = dict(paths or {})
        unknown = set(paths) - set(PLACEHOLDERS)
        if unknown:
            raise TemplateError(f"config.prompts has unknown template name(s) {sorted(unknown)}; "
                                f"known: {sorted(PLACEHOLDERS)}")
        return cls(**{name: load_template(name, paths.get(name) or None) for name in PLACEHOLDERS})

    def problem_chat(self, problem: str) -> list[Message]:
        """The problem as the only user message (rollouts, continuations, SFT prompts)."""
        return [{"role": "user", "content": self.problem.render(problem=problem)}]

    def hint_chat(self, problem: str, hint: str) -> list[Message]:
        """Hint-guided RL: the problem and the start of its reference solution
        (`hint_prefix`) as the only user message."""
        return [{"role": "user", "content": self.problem_with_hint.render(problem=problem,
                                                                           hint=hint)}]

    def solve_chat(self, problem: str, reference_solution: str) -> list[Message]:
        """Turn 1 of the proposer chat: solve with the reference solution as a guide."""
        return [{"role": "user", "content": self.solve_with_reference.render(
            problem=problem, reference_solution=reference_solution)}]

    def proposal_chat(self, problem: str, reference_solution: str, guided_solution: str,
                      numbered_attempt: str) -> list[Message]:
        """The full self-verification chat: turn 1, the model's own guided solution as
        the assistant turn, then the failed attempt (labelled steps, `StepFormat.number`)
        and the task."""
        return [
            *self.solve_chat(problem, reference_solution),
            {"role": "assistant", "content": guided_solution},
            {"role": "user", "content": self.verify_attempt.render(
                numbered_attempt=numbered_attempt, problem=problem)},
        ]

    def reflect_chat(self, problem: str, reference_solution: str, attempt: str) -> list[Message]:
        """SFT(Reflect) baseline: rewrite the whole failed attempt given the reference."""
        return [{"role": "user", "content": self.reflect.render(
            problem=problem, reference_solution=reference_solution, attempt=attempt)}]


_WORD = re.compile(r"\S+")


def hint_prefix(reference_solution: str, fraction: float) -> str:
    """The first `fraction` of a reference solution, cut after a whole word: the first
    ceil(fraction x words) whitespace-separated words with the text between them as it
    is (newlines and LaTeX kept). 0 gives '', 1 the whole solution (stripped)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"hint fraction must be in [0, 1], got {fraction!r}")
    words = list(_WORD.finditer(reference_solution))
    keep = math.ceil(fraction * len(words))
    if keep == 0:
        return ""
    return reference_solution[words[0].start():words[keep - 1].end()]
