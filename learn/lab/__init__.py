"""The compute behind every playground: plain functions over numpy and torch.

Nothing in this package imports Django or Celery (tests/test_boundaries.py checks it),
so each module can be tested and benchmarked on its own.
"""
