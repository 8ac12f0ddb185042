"""Regenerate ``examples/penguins`` as ``mlservice init`` writes it (run after editing templates).

    python examples/regenerate.py

tests/test_scaffold.py fails while the committed example differs from a fresh ``init``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mlservice.scaffold import scaffold_project

EXAMPLE = Path(__file__).resolve().parent / "penguins"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / EXAMPLE.name
        written = scaffold_project(fresh)
        if EXAMPLE.exists():
            shutil.rmtree(EXAMPLE)
        shutil.copytree(fresh, EXAMPLE)
    print(f"wrote {len(written)} files to {EXAMPLE}")


if __name__ == "__main__":
    main()
