"""Grading: equivalence table (incl. true negatives), bounded time, a pool that survives."""

import os
import signal
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from int_jax.grading.verify import Grade, GraderPool, grade, grade_batch

C, W, U, N = Grade.CORRECT, Grade.WRONG, Grade.UNPARSABLE, Grade.NO_ANSWER
TIMEOUT_S = 3.0


def boxed(answer: str) -> str:
    return f"Let me think.\n\nSo after all that work, the final answer is $\\boxed{{{answer}}}$."


# (response answer or full response, gold, expected). Plain strings are boxed.
TABLE = [
    # integers, decimals, scientific notation, trailing periods, $-wrapping
    ("42", "42", C), ("42", "$42$", C), ("42", "42.", C), ("41", "42", W),
    ("4151879777", "4151879777", C), ("4151879778", "4151879777", W),
    ("847288609444.0", "847288609444", C), (r"1.307674368\times 10^{12}", "1307674368000", C),
    ("0.5", r"$\frac{1}{2}$", C), ("1.75", r"\frac{7}{4}", C), ("0.333", r"\frac{1}{3}", W),
    # fractions and roots
    (r"\dfrac{1}{2}", r"$\frac{1}{2}$", C), ("1/2", r"\frac12", C), (r"\frac{2}{4}", r"\frac{1}{2}", C),
    (r"-\frac{2023}{4096576}", r"$-\frac{2023}{2024^2}$", C), (r"\frac{2023}{2024^2}", r"$-\frac{2023}{2024^2}$", W),
    (r"\sqrt[3]{\frac{1568}{13}}", r"$2\sqrt[3]{\frac{196}{13}}$", C),
    (r"\sqrt{2}-1", r"$\sqrt{2}-1$", C), (r"1-\sqrt{2}", r"$\sqrt{2}-1$", W),
    (r"\frac{17458}{23769}+\frac{2970\sqrt5}{23769}", r"$\frac{17458+2970\sqrt{5}}{23769}$", C),
    (r"\frac{3\sqrt{3}}{2\sqrt{5}}", r"\frac{3\sqrt{15}}{10}", C), (r"\frac{\sqrt{10}}{2}", r"$\frac{\sqrt{10}}{2}$", C),
    (r"\sqrt{\frac37}", r"$\sqrt{\frac{3}{7}}$", C), (r"\sqrt{\frac{7}{3}}", r"$\sqrt{\frac{3}{7}}$", W),
    # floor / log / powers / symbolic expressions
    (r"\lfloor \log_2 a \rfloor + 1", r"$\left\lfloor \log_{2}a\right\rfloor +1$.", C),
    (r"\lfloor \log_2 a \rfloor", r"$\left\lfloor \log_{2}a\right\rfloor +1$.", W),
    (r"\lceil \log_2 a \rceil", r"$\left\lfloor \log_{2}a\right\rfloor +1$.", W),
    (r"2^{u}/4", r"$2^{u-2}$", C), (r"2^{u-1}", r"$2^{u-2}$", W),
    ("x+1", "x+1", C), ("x-1", "x+1", W), ("1+x", "x+1", C),
    (r"4 \cdot 3^{2023}", r"$4\cdot3^{2023}$", C), (r"3^{2024}", r"$4\cdot3^{2023}$", W),
    (r"\binom{2k}{k}^{2}", r"$\binom{2k}{k}^2$", C), (r"2^{2024}+1", r"$2^{2024}+1$", C),
    (r"2(1-m)", "$2-2m$", C), (r"2(1-m)", "$2-m$", W), (r"5 \text{ cm}", "5", C),
    (r"12\text{ degrees}", "12", C), (r"5 \text{ cm}", "6", W), (r"180^\circ - 2\alpha", r"$180 - 2\alpha$", C), (r"90^\circ", "90", C),
    # intervals and inequalities
    ("[1,3]", "(1,3]", W), ("(1,3]", "(1,3]", C), ("(1,3)", "(1,3]", W),
    (r"(-\infty, 0]", r"$(-\infty , 0]$", C), (r"(-\infty, 0)", r"$(-\infty , 0]$", W),
    (r"(-\infty,0)\cup\{1/2\}", r"$(-\infty,0)\cup\{\frac{1}{2}\}$", C),
    (r"(-\infty,0)", r"$(-\infty,0)\cup\{\frac{1}{2}\}$", W),
    (r"[-\frac65, \infty)", r"$x\geq-\frac{6}{5}$  ", C), (r"x > -\frac{6}{5}", r"$x\geq-\frac{6}{5}$", W),
    ("(0,1)", r"$0<c<1$", C), (r"0 < k \leq \frac49", r"$0 < k \le \frac{4}{9}$", C),
    (r"\{1, 2\}", "(1,2)", W),  # a set is not an interval
    # unordered sets / lists of values
    (r"\frac{2}{3}, -\frac23, 0", r"$-\frac{2}{3},0,\frac{2}{3}$", C),
    (r"\{0, \pm\frac{2}{3}\}", r"$-\frac{2}{3},0,\frac{2}{3}$", C),
    (r"\frac{2}{3}, 0", r"$-\frac{2}{3},0,\frac{2}{3}$", W),  # one member missing
    (r"-\frac{2}{3},0,\frac{2}{3}, 1", r"$-\frac{2}{3},0,\frac{2}{3}$", W),  # one extra
    ("2030, 2026", "2026, 2030", C), (r"\{2026, 2030\}", "2026, 2030", C),
    (r"3 \text{ and } 4", "3, 4", C), ("3", "3, 4", W), ("1, 13, 25, 325", "1, 13, 25, 325", C),
    ("1, 13, 25", "1, 13, 25, 325", W),
    # tuples are ordered
    (r"(2, \frac12, \frac94)", r"$(2, \frac{1}{2}, \frac{9}{4})$", C),
    (r"(\frac12, 2, \frac94)", r"$(2, \frac{1}{2}, \frac{9}{4})$", W),
    ("(3,2,5)", "(3,2,5)", C), ("(2,3,5)", "(3,2,5)", W),
    # percentages
    (r"50\%", r"50\%", C), ("0.5", r"50\%", C), ("50", r"50\%", C), (r"25\%", r"50\%", W),
    # function answers
    ("P(x)=x+1, P(x)=-1", "$P(x)=-1, P(x)=x+1$", C),
    (r"P(x) = -1 \text{ or } P(x) = x + 1", "$P(x)=-1, P(x)=x+1$", C),
    ("P(x)=x+1", "$P(x)=-1, P(x)=x+1$", W), ("P(x)=-1, P(x)=x-1", "$P(x)=-1, P(x)=x+1$", W),
    ("f(x) = x + 1", "f(x)=x+1", C), ("x+1", "f(x)=x+1", C), ("f(x)=x", "f(x)=x+1", W),
    (r"g(x)=\lfloor x\rfloor, g(x)=\lceil x\rceil, g(x)=c",
     r"$g(x)=c, g(x)=\lceil x \rceil, g(x)=\lfloor x \rfloor$", C),
    (r"g(x)=\lfloor x\rfloor, g(x)=c", r"$g(x)=c, g(x)=\lceil x \rceil, g(x)=\lfloor x \rfloor$", W),
    (r"g(x)=\frac{(2x)^a+(2x)^{-a}}{3}", r"$g(x)=\frac{1}{3} ((2x)^a +(2x)^{-a})$ for some $a>0$", C),
    (r"P(x)=\frac{cx+c^2}{1+c}, Q(x)=cx+c^2", r"$P(x)=(cx+c^{2})/(1+c), Q(x)=cx+c^{2}$, where $c\ne -1$", C),
    ("n=4k+3", "$n=4k+3$", C), ("4k+3", "$n=4k+3$", C), ("4k+1", "$n=4k+3$", W),
    # "all n" answers and prose
    (r"\text{all } n \ge 2", r"$n \ge 2$", C), (r"n \geq 2", r"$n \ge 2$", C), (r"n > 2", r"$n \ge 2$", W),
    (r"n \text{ odd}", "odd $n$", C), (r"\text{all odd } n", "odd $n$", C), (r"\text{even } n", "odd $n$", W),
    ("n", "odd $n$", W), (r"\text{All powers of } 2", "All powers of 2\n", C),
    (r"\text{all powers of } 3", "All powers of 2\n", W), ("4k+3", "All numbers of the form $4k+3$", C),
    (r"\text{all primes}, 1, 4, 6", "All prime numbers, 1, 4, and 6.", C),
    (r"\text{all primes}, 1, 4", "All prime numbers, 1, 4, and 6.", W),
    (r"\text{none}", "No positive integers", C), (r"\emptyset", "no solutions", C), ("0", "no solutions", W),
    ("60, 100, 8p", "60, 100, 8p (for all odd primes p)", C),
    # golds that some datasets box; extraction edge cases
    ("-2, 2", r"\boxed{-2, 2}", C),
    (r"The answer is 7, not \boxed{5}. Actually \boxed{7}", "7", C),
    (r"I think \boxed{7} but wait, \boxed{8}", "7", W),
    ("The answer is 7.", "7", N), (r"cut off \boxed{7", "7", N), (r"\boxed{}", "7", N),
    (r"\fbox{12}", "12", C), (r"\boxed 5", "5", C),
    (r"\boxed{" + "1" * 1001 + "}", "1", U),
    # thousands separators only where the digits group by three; currency; units
    (r"32,\! 349", "32349", C), (r"11,\!111,\!111,\!100", "11111111100", C), ("32, 349", "32349", W),
    (r"32{,}349", "32349", C), (r"32\,349", "32349", C), (r"1,\!23", "123", W),
    (r"\$16,\!386.20", "$16386.20$", C), (r"\$16,\!386.21", "$16386.20$", W),
    (r"125\textnormal{ miles}", "$125$ miles", C), ("125", "$125$ miles", C), ("126", "$125$ miles", W),
    (r"3\mathrm{ cm}", "3", C), ("2 ab", "2", W),  # `ab` is a product, not a unit
    # golds that are not bare answers: solution text, several boxes
    (r"28\%", "So it loses 28%. Final Answer: The final answer is $28 \\%$. I hope it is correct.", C),
    (r"27\%", "So it loses 28%. Final Answer: The final answer is $28 \\%$. I hope it is correct.", W),
    ("1, 2", r"$\boxed{1}\boxed{2}$", C), ("2", r"$\boxed{1}\boxed{2}$", W),
    # olympiad forms: \pm against the solution list
    (r"(1,2), (-1,2)", r"$(\pm 1, 2)$", C), ("(1,2)", r"$(\pm 1, 2)$", W),
    (r"1+\sqrt2, 1-\sqrt2, -1+\sqrt2, -1-\sqrt2", r"$\pm 1 \pm \sqrt{2}$", C),
    (r"1+\sqrt2, -1-\sqrt2", r"$\pm 1 \pm \sqrt{2}$", W),
    (r"(1,1), (1,-1), (-1,1), (-1,-1)", r"$(\pm 1, \pm 1)$", U),  # independent or same signs?
    ("(2,2)", r"$(\pm 1, \pm 1)$", W),  # wrong under either reading
    # an inequality against the interval
    (r"x \le 0", r"$(-\infty, 0]$", C), ("x < 0", r"$(-\infty, 0]$", W),
    (r"1 \le x \le 2", "[1,2]", C), (r"x \ne 0", r"$(-\infty,0)\cup(0,\infty)$", C),
    (r"x < 0 \text{ or } x > 1", r"$(-\infty,0)\cup(1,\infty)$", C),
    (r"x < 0 \text{ or } x > 2", r"$(-\infty,0)\cup(1,\infty)$", W),
    ("x^2 = 4", r"$\{-2, 2\}$", W),  # an equation is not its solution set
    # congruences against n = 4k+3
    ("n = 4k+3", r"$n \equiv 3 \pmod 4$", C), (r"n \equiv 3 \pmod{4}", "$n=4k+3$", C),
    (r"n \equiv -1 \pmod 4", r"$n \equiv 3 \pmod{4}$", C), (r"n \equiv 1 \pmod 4", r"$n \equiv 3 \pmod{4}$", W),
    ("n = 4k+1", r"$n \equiv 3 \pmod 4$", W), (r"4k+1, 4k+3", r"$n \equiv 1 \pmod 2$", C),
    (r"n \equiv 1, 3 \pmod 8", r"$n = 8k+1$ or $n = 8k+3$", C), (r"n \equiv 1 \pmod 8", r"$n \equiv 1, 3 \pmod 8$", W),
    (r"n \equiv 3 \ (\mathrm{mod}\ 4)", r"$n \equiv 3 \pmod 4$", C),
    (r"9 \pmod{11}", "9", C), ("7", r"$n \equiv 3 \pmod 4$", U), ("5", r"$n \equiv 3 \pmod 4$", W),
    (r"\text{odd } n", r"$n \equiv 1 \pmod 2$", U),
    # lists elided with \ldots / \dots / \cdots
    (r"1, 2, \dots, n", r"$1, 2, \ldots, n$", C), ("1, 2, n", r"$1, 2, \ldots, n$", U),
    (r"\{1, 2, \ldots, 10\}", "1,2,3,4,5,6,7,8,9,10", C), (r"1, 2, \ldots, 9", r"$1, 2, \ldots, 10$", W),
    (r"2, 4, 6, \cdots", r"$2, 4, 6, \ldots$", C), ("2, 4, 6", r"$2, 4, 6, \ldots$", W),
    ("2k", r"$2, 4, 6, \ldots$", U),
    # quantified answers: "all n such that"
    (r"n \equiv 3 \pmod 4", r"all $n$ such that $n \equiv 3 \pmod 4$", C),
    ("n = 4k+3", r"\text{all } n \text{ such that } n \equiv 3 \pmod 4", C),
    (r"n \ge 2", r"all integers $n \ge 2$", C), (r"n \ge 3", r"all integers $n \ge 2$", W),
    ("2^k", "All powers of 2", U), ("n = 2k+1", "odd $n$", U),  # a formula against words
]

# math-verify limits we could not fix in the normalisation layer.
XFAIL = {
    (r"\frac{(2k)!}{2^k k!}", "$(2k-1)!!$"):
        "latex2sympy reads (2k-1)!! as a factorial of a factorial",
}
TABLE += [(a, g, C) for a, g in XFAIL]


@pytest.fixture(scope="module")
def pool():
    with GraderPool(2) as p:
        yield p


def _response(answer: str) -> str:
    return answer if ("\\boxed" in answer or "\\fbox" in answer or "answer is 7." in answer) else boxed(answer)


@pytest.mark.parametrize("answer, gold, expected", [
    pytest.param(a, g, e, marks=pytest.mark.xfail(reason=XFAIL[(a, g)], strict=True)
                 if (a, g) in XFAIL else ()) for a, g, e in TABLE])
def test_table(pool, answer, gold, expected):
    [got] = grade_batch([(_response(answer), gold)], pool=pool, timeout_s=TIMEOUT_S)
    assert got == expected


def test_batch_is_in_input_order_and_dedups(pool):
    pairs = [(_response(a), g) for a, g, _ in TABLE if (a, g) not in XFAIL] * 2
    expected = [e for a, g, e in TABLE if (a, g) not in XFAIL] * 2
    assert grade_batch(pairs, pool=pool, timeout_s=TIMEOUT_S) == expected


def test_convenience_grade_uses_a_bounded_default_pool():
    assert grade(boxed("3"), "3") == Grade.CORRECT
    t = time.perf_counter()
    assert grade(boxed("10^{10^{10^{10}}}"), "5", timeout_s=1.0) == Grade.TIMEOUT
    assert time.perf_counter() - t < 1.0 + 1.0 + 1.0  # limit + grace + slack
    assert grade(boxed("3"), "4") == Grade.WRONG


def test_huge_exponent_times_out_and_pool_keeps_grading(pool):
    t = time.perf_counter()
    out = grade_batch([(boxed("10^{10^{10^{10}}}"), "5"), (boxed("2"), "2"),
                       (boxed("9^{9^{9^{9}}}"), "1"), (boxed("x-1"), "x+1")],
                      pool=pool, timeout_s=1.0)
    assert out == [Grade.TIMEOUT, C, Grade.TIMEOUT, W]
    assert time.perf_counter() - t < 2 * (1.0 + pool.grace_s) + 2.0


def test_hung_worker_is_killed_and_replaced_its_item_timeout(pool):
    """A worker that stops answering (SIGSTOP: not even its own timer helps) is killed
    after the hard limit; its item is `timeout`, every other item is still graded."""
    victim = pool.pids()[0]
    os.kill(victim, signal.SIGSTOP)
    restarts = pool.restarts
    pairs = [(boxed(str(i)), str(i)) for i in range(20)]
    out = grade_batch(pairs, pool=pool, timeout_s=1.0)
    assert pool.restarts == restarts + 1 and victim not in pool.pids()
    assert out.count(Grade.TIMEOUT) == 1 and out.count(C) == 19


def test_dead_worker_is_replaced_its_item_timeout():
    with GraderPool(1) as own:
        grade_batch([(boxed("1"), "1")], pool=own)  # wait until the worker is up
        victim = own.pids()[0]
        killer = threading.Timer(0.5, os.kill, (victim, signal.SIGKILL))
        killer.start()
        out = grade_batch([(boxed("10^{10^{10^{10}}}"), "5"), (boxed("7"), "7")],
                          pool=own, timeout_s=5.0)
        killer.join()
        assert own.restarts == 1 and victim not in own.pids()
        assert out == [Grade.TIMEOUT, C]


def test_multi_box_switch(pool):
    two = r"so $n = \boxed{-2}$ and $\boxed{1}$."
    sub = r"$\boxed{200}$, then $\boxed{255}$. Final Answer: The final answer is $10,455$."
    pairs = [(two, "1, -2"), (sub, "10455")]
    assert grade_batch(pairs, pool=pool, timeout_s=TIMEOUT_S) == [W, W]  # the authors' last box
    assert grade_batch(pairs, pool=pool, timeout_s=TIMEOUT_S, multi_box=True) == [C, C]
    assert grade(two, "1, -2", multi_box=True) == C


def test_workers_option_makes_a_private_pool():
    assert grade_batch([(boxed("1"), "1"), (boxed("2"), "1")], workers=1) == [C, W]


# ---- property tests: any input comes back graded, in time, and the pool survives ----

_TOKENS = list("{}\\^_()[]$,.=+-*/ 0123456789xnabfrc") + [
    r"\frac", r"\sqrt", r"\boxed{", r"\left(", r"\right)", r"\lfloor", r"\infty", r"\text{",
    r"\cup", r"\{", r"\}", "^{", "10^{", r"\equiv", r"\pmod", r"\ldots", r"\pm", r",\!", "{,}",
    r"\textnormal{", "k", r"\le", "Final Answer: "]
_LATEXISH = st.lists(st.sampled_from(_TOKENS), max_size=150).map("".join)
_PROPERTY = settings(max_examples=25, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_LIMIT = 1.0


def _check_bounded(pool, pairs):
    t = time.perf_counter()
    out = grade_batch(pairs, pool=pool, timeout_s=_LIMIT)
    elapsed = time.perf_counter() - t
    assert len(out) == len(pairs) and all(isinstance(g, Grade) for g in out)
    assert elapsed < len(pairs) * (_LIMIT + pool.grace_s) + 5.0
    assert grade_batch([(boxed("2"), "2")], pool=pool, timeout_s=_LIMIT) == [C]  # still alive


@_PROPERTY
@given(text=st.text(max_size=2000), gold=st.text(max_size=50))
def test_any_text_is_graded(pool, text, gold):
    _check_bounded(pool, [(text, gold), (boxed(text), gold)])


@_PROPERTY
@given(junk=_LATEXISH, gold=_LATEXISH)
def test_malformed_latex_is_graded(pool, junk, gold):
    _check_bounded(pool, [(boxed(junk), gold or "1"), (junk, "1")])


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(depth=st.integers(1, 3000), n=st.integers(100_000 - 2000, 100_000), base=st.sampled_from(["10", "9", "x"]))
def test_deep_nesting_huge_exponents_and_100k_strings(pool, depth, n, base):
    nested = "{" * depth + "1" + "}" * depth
    tower = "^{".join([base] * min(depth, 12)) + "}" * (min(depth, 12) - 1)
    filler = ("lorem ipsum " * (n // 12 + 1))[: n - 40]
    _check_bounded(pool, [(boxed(nested), "1"), (boxed(tower), "5"),
                          (filler + boxed("7"), "7"), ("{" * n, "1")])
