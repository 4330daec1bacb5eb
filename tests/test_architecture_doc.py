"""ARCHITECTURE.md is linked from the README and names only places that exist."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_links_the_architecture_page():
    readme = (REPO / "README.md").read_text()
    assert "(ARCHITECTURE.md)" in readme and "DESIGN.md" not in readme
    assert (REPO / "ARCHITECTURE.md").is_file()


def test_every_path_the_architecture_page_names_exists():
    text = (REPO / "ARCHITECTURE.md").read_text()
    paths = set(re.findall(r"`((?:int_jax|configs|launch|benchmarks)/[\w./*-]*)`", text))
    assert len(paths) > 20
    for path in paths:
        assert any(REPO.glob(path.rstrip("/"))), f"ARCHITECTURE.md names {path}, which does not exist"
    # bare module names in a row are relative to the folder named first in that row
    for row in text.splitlines():
        folder = re.search(r"`(int_jax/\w+)/", row)
        for name in re.findall(r"`(\w+\.py)`", row):
            assert folder and (REPO / folder.group(1) / name).exists() or (REPO / "int_jax" / name).exists(), \
                f"ARCHITECTURE.md: {name} not found ({row[:60]}...)"
