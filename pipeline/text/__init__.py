"""Text kernels: pure functions over text and batches of text, no I/O beyond their own lexicons.

Modules here import only the standard library, numpy, numba, pyarrow and `pipeline.config`
(checked by tests/test_boundaries.py), so the stages and benchmarks can use them anywhere.
"""

from pathlib import Path

LEXICONS = Path(__file__).resolve().parent / "lexicons"  # word lists and patterns the kernels load once
