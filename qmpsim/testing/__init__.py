"""For test suites: the seeded walk (no Hypothesis), Hypothesis strategies, the
conformance checker and the pytest plugin.

Hypothesis and pytest are imported only by the modules that exist for them
(:mod:`~qmpsim.testing.strategies`, :mod:`~qmpsim.testing.pytest_plugin`); importing
this package loads nothing.
"""
