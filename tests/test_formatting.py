"""ruff format owns the layout: ``# fmt: skip`` only on the true tables listed here (one case a row)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("graphgen", "clients", "bench", "tests")
# Tables of cases, one a row, that the formatter would break apart row by row. Paper tables as data use
# `# fmt: off` / `# fmt: on` blocks, which this test leaves alone.
TABLES = Counter(
    {
        "tests/server/unit/test_errors.py": 1,
        "tests/server/unit/test_model_config.py": 1,
        "tests/cli/test_user_errors.py": 1,
        "tests/server/unit/test_triton_answers.py": 1,
    }
)


def test_fmt_skip_only_on_listed_tables() -> None:
    found: Counter[str] = Counter()
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            found[path.relative_to(ROOT).as_posix()] += sum(
                line.rstrip().endswith("# fmt: " + "skip") for line in text.splitlines()
            )
    assert +found == TABLES, (
        f"fmt: skip where it is not a listed table: {dict(+found - TABLES)}; listed: {dict(TABLES)}"
    )
