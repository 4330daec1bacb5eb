"""Running sums: a miniature reasoning domain where InT can be watched working on a CPU.

A problem adds a list of small numbers to a start number; a solution is one step per
addition, steps separated by blank lines, then `\\boxed{total}`. Every step can be
checked exactly, so the first wrong step of any attempt is known (`checker.py`), and the
base model's mistakes are systematic (dropped carries, `traces.py`), so hard problems
(many carries) fail and easy ones (none) do not. See the README's "A miniature InT".

Files: `problems.py` (problems, reference solutions, difficulty), `checker.py` (the exact
step checker), `traces.py` (attempts with systematic errors), `tokenizer.py` (the
character tokenizer), `base_data.py` (the base model's SFT data), `command.py`
(`int-jax running-sum`: the problem sets and the base model).
"""
