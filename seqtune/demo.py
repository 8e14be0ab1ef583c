"""Moved: the demo corpus generator is `seqtune/demo_data/generate.py`. This alias only keeps the imports of
tests/test_data.py and tests/test_reliability.py working until they import from there; delete it then."""

from seqtune.demo_data.generate import make_paraphrase_pairs  # noqa: F401
