"""The ``kprod`` command line: ``kprod broker``, ``kprod demo``, ``kprod perf``; public API only."""
