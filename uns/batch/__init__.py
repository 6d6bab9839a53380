"""Batches and review by exception: the pure logic of the batch report.

- :mod:`uns.batch.spec`: spec files (limits per metric, scoped by path, product,
  recipe and phase; the most specific entry wins) and the fallback limits
- :mod:`uns.batch.signals`: excursions, statistics, completeness gaps and the
  min/max-per-pixel downsampling of plotted series, with NumPy over every sample

No I/O here: the lake queries are in :mod:`lake.batches`, the report is put
together and rendered in :mod:`uns.batch.report`.
"""
