"""Parsing the proposer's `<intervention>` block: realistic answers and model slips."""

import json
import time

import pytest

from int_jax.intervention.parse import last_block, parse_intervention

VERIFY = ("Let me check the steps one at a time.\n\nStep 1 is fine: the substitution is valid.\n\n"
          "Step 2 divides by $x-1$ without checking $x=1$, which loses a root. This is the first "
          "critical error.\n\n")

# (name, model output, expected location, expected content, repairs that must be reported)
OK_CASES = [
    ("strict", VERIFY + '<intervention>{"location": 2, "content": "Before dividing, check x = 1 separately."}</intervention>',
     2, "Before dividing, check x = 1 separately.", set()),
    ("escaped latex", VERIFY + r'<intervention>{"location": 3, "content": "We need $\\frac{a}{b} \\geq 2$."}</intervention>',
     3, r"We need $\frac{a}{b} \geq 2$.", set()),
    ("unescaped latex frac", r'<intervention>{"location": 4, "content": "So $\frac{1}{2}x = y$."}</intervention>',
     4, r"So $\frac{1}{2}x = y$.", {"latex_backslash"}),
    ("unescaped theta times right", r'<intervention>{"location": 1, "content": "Let $\theta \times \left(a\right) \to 0$"}</intervention>',
     1, r"Let $\theta \times \left(a\right) \to 0$", {"latex_backslash"}),
    ("unescaped sqrt alpha (invalid escapes)", r'<intervention>{"location": 2, "content": "Take $\sqrt{\alpha}$ and $\{1,2\}$."}</intervention>',
     2, r"Take $\sqrt{\alpha}$ and $\{1,2\}$.", {"latex_backslash"}),
    ("neq vs newline", r'<intervention>{"location": 2, "content": "Since $x \neq 0$,\nThen divide."}</intervention>',
     2, "Since $x \\neq 0$,\nThen divide.", {"latex_backslash"}),
    ("beta binom", r'<intervention>{"location": 5, "content": "$\beta = \binom{5}{2}$"}</intervention>',
     5, r"$\beta = \binom{5}{2}$", {"latex_backslash"}),
    ("underline vs unicode escape", r'<intervention>{"location": 2, "content": "\u00e9t\u00e9 and \underline{x}"}</intervention>',
     2, "\u00e9t\u00e9 and \\underline{x}", {"latex_backslash"}),
    ("single quotes", "<intervention>{'location': 3, 'content': 'Use the identity sin^2 + cos^2 = 1.'}</intervention>",
     3, "Use the identity sin^2 + cos^2 = 1.", {"single_quotes"}),
    ("single quotes with apostrophe", "<intervention>{'location': 3, 'content': \"Let's recount: the student's case 2 is missing.\"}</intervention>",
     3, "Let's recount: the student's case 2 is missing.", {"single_quotes"}),
    ("single-quoted content with apostrophe", "<intervention>{'location': 3, 'content': 'Let's recount the cases.'}</intervention>",
     3, "Let's recount the cases.", {"single_quotes"}),
    ("trailing comma", '<intervention>{"location": 6, "content": "Recheck the sign.",}</intervention>',
     6, "Recheck the sign.", {"trailing_comma"}),
    ("trailing comma with newline", '<intervention>{\n  "location": 6,\n  "content": "Recheck the sign.",\n}</intervention>',
     6, "Recheck the sign.", {"trailing_comma"}),
    ("raw newline in content", '<intervention>{"location": 2, "content": "First line.\nSecond line."}</intervention>',
     2, "First line.\nSecond line.", {"raw_newline"}),
    ("raw crlf and tab", '<intervention>{"location": 2, "content": "A.\r\n\tB."}</intervention>',
     2, "A.\r\n\tB.", {"raw_newline", "raw_control"}),
    ("location Step 7", '<intervention>{"location": "Step 7", "content": "Fix."}</intervention>',
     7, "Fix.", {"location_string"}),
    ("location '7'", '<intervention>{"location": "7", "content": "Fix."}</intervention>',
     7, "Fix.", {"location_string"}),
    ("location step #7.", '<intervention>{"location": "step #7.", "content": "Fix."}</intervention>',
     7, "Fix.", {"location_string"}),
    ("location 7.0", '<intervention>{"location": 7.0, "content": "Fix."}</intervention>',
     7, "Fix.", {"location_string"}),
    ("code fence", '<intervention>\n```json\n{"location": 2, "content": "Fix."}\n```\n</intervention>',
     2, "Fix.", {"code_fence"}),
    ("text around object", '<intervention>Here it is: {"location": 2, "content": "Fix."} done</intervention>',
     2, "Fix.", {"text_around_object"}),
    ("last block wins", '<intervention>{"location": 1, "content": "old"}</intervention> On reflection:\n'
     '<intervention>{"location": 4, "content": "new"}</intervention>', 4, "new", set()),
    ("echoed format then real block", 'I must answer as <intervention>{"location": <step number>, "content": '
     '"<replacement step>"}</intervention>.\n\n<intervention>{"location": 3, "content": "Real."}</intervention>',
     3, "Real.", set()),
    ("unclosed tag at the end", 'Final: <intervention>{"location": 2, "content": "Fix it."}',
     2, "Fix it.", {"unclosed_block"}),
    ("tag case and spaces", '< Intervention >{"location": 2, "content": "Fix."}</ INTERVENTION>',
     2, "Fix.", set()),
    ("inner unescaped quotes", '<intervention>{"location": 2, "content": "Call this the "key" case."}</intervention>',
     2, 'Call this the "key" case.', {"inner_quote"}),
    ("keys in other case", '<intervention>{"Location": 2, "Content": "Fix."}</intervention>',
     2, "Fix.", set()),
    ("extra keys ignored", '<intervention>{"location": 2, "content": "Fix.", "reason": "sign"}</intervention>',
     2, "Fix.", set()),
    ("unicode content", '<intervention>{"location": 2, "content": "Since x ≥ 0, √x is real."}</intervention>',
     2, "Since x ≥ 0, √x is real.", set()),
    ("escaped quote and backslash", r'<intervention>{"location": 2, "content": "He wrote \"a\\b\"."}</intervention>',
     2, 'He wrote "a\\b".', set()),
    ("empty content parses (filter rejects)", '<intervention>{"location": 2, "content": ""}</intervention>',
     2, "", set()),
    ("out of range parses (filter rejects)", '<intervention>{"location": 99, "content": "x"}</intervention>',
     99, "x", set()),
    ("several repairs at once", "<intervention>\n```\n{'location': 'Step 3', 'content': 'Note $\\frac{1}{3}$\nhere',}\n```",
     3, "Note $\\frac{1}{3}$\nhere", {"single_quotes", "trailing_comma", "location_string",
                                      "latex_backslash", "raw_newline", "code_fence", "unclosed_block"}),
]

FAIL_CASES = [
    ("no block", "The first error is in step 3; it should use x=2.", "no_block"),
    ("empty text", "", "no_block"),
    ("only closing tag", 'x {"location": 2, "content": "y"}</intervention>', "no_block"),
    ("empty block", "<intervention></intervention>", "unparsable"),
    ("not json", "<intervention>location 3, content: use x</intervention>", "unparsable"),
    ("json list", '<intervention>[2, "fix"]</intervention>', "unparsable"),
    ("missing location", '<intervention>{"content": "fix"}</intervention>', "unparsable"),
    ("missing content", '<intervention>{"location": 2}</intervention>', "unparsable"),
    ("location words", '<intervention>{"location": "the third step", "content": "x"}</intervention>', "unparsable"),
    ("location bool", '<intervention>{"location": true, "content": "x"}</intervention>', "unparsable"),
    ("location fraction", '<intervention>{"location": 2.5, "content": "x"}</intervention>', "unparsable"),
    ("content not text", '<intervention>{"location": 2, "content": ["a", "b"]}</intervention>', "unparsable"),
    ("cut off mid string", '<intervention>{"location": 2, "content": "Consider the cas', "unparsable"),
    ("python call is not evaluated", "<intervention>__import__('os').system('echo hi')</intervention>", "unparsable"),
    ("python dict syntax", "<intervention>dict(location=2, content='x')</intervention>", "unparsable"),
    ("huge block", "<intervention>{\"location\": 2, \"content\": \"" + "a" * 40_000 + "\"}</intervention>", "unparsable"),
    ("deep nesting", '<intervention>{"location": 2, "content": ' + "[" * 12_000 + "]" * 12_000 + "}</intervention>",
     "unparsable"),
]


@pytest.mark.parametrize("name,text,location,content,repairs", OK_CASES, ids=[c[0] for c in OK_CASES])
def test_parses(name, text, location, content, repairs):
    r = parse_intervention(text)
    assert r.ok, (r.error, r.detail)
    assert r.location == location
    assert r.content == content
    assert set(r.repairs) == repairs


@pytest.mark.parametrize("name,text,error", FAIL_CASES, ids=[c[0] for c in FAIL_CASES])
def test_rejects(name, text, error):
    r = parse_intervention(text)
    assert not r.ok and r.error == error, r
    assert r.detail


def test_only_the_tail_is_searched():
    block = '<intervention>{"location": 1, "content": "x"}</intervention>'
    assert parse_intervention(block + "z" * 1000, max_text_chars=500).error == "no_block"
    assert parse_intervention(block + "z" * 100, max_text_chars=500).ok


def test_time_bound_on_adversarial_text():
    # 2 MB of tags and quotes: bounded by the tail and block limits, well under a second.
    evil = ("<intervention>{'\"," * 200_000) + "'" * 100_000
    t0 = time.perf_counter()
    r = parse_intervention(evil, time_limit_s=0.5)
    assert time.perf_counter() - t0 < 2.0  # stated bound: 0.5 s deadline plus slack
    assert not r.ok


def test_deadline_makes_it_unparsable():
    text = '<intervention>{"location": 2, "content": "' + "a" * 30_000 + '"}</intervention>'
    r = parse_intervention(text, time_limit_s=0.0)
    assert r.error == "unparsable" and "limit" in r.detail


def test_last_block_reports_missing_close():
    assert last_block("a <intervention>y") == ("y", True)
    assert last_block("nothing") == (None, False)


def test_last_closed_block_wins_over_a_later_bare_tag():
    # The model refers to its block after writing it: the bare tag never closes.
    text = (VERIFY + '<intervention>{"location": 2, "content": "Check x = 1 first."}</intervention>'
            "\n\nI put the fix in the <intervention> block above.")
    r = parse_intervention(text)
    assert r.ok, (r.error, r.detail)
    assert (r.location, r.content, r.repairs) == (2, "Check x = 1 first.", ())
    assert last_block("a <intervention>x</intervention> <intervention>y") == ("x", False)
    # A later bare closing tag does not stretch the block past its own closing tag.
    assert last_block("<intervention>x</intervention> see </intervention>") == ("x", False)


@pytest.mark.parametrize("location", ["Step 5", "Substep 5", "**Substep 5:**", "substep #5", "5-6",
                                      "5–6", "Steps 5-6", " 5 - 6 "])
def test_location_forms_the_authors_parser_reads_as_the_first_number(location):
    r = parse_intervention('<intervention>{"location": %s, "content": "Fix."}</intervention>'
                           % json.dumps(location))
    assert r.ok, (r.error, r.detail)
    assert r.location == 5 and "location_string" in r.repairs


def test_non_text_input():
    assert parse_intervention(None).error == "unparsable"
