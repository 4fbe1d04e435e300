"""Comparing runs: ``runs`` (reading run folders and CSV logs), ``table`` (aggregation over seeds,
the Markdown / CSV table), ``plots`` (PNG plots) and ``report`` (the ``compare`` verb)."""
