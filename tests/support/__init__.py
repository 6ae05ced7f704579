"""Helpers the test directories share: ``from support.<module> import ...``.

pyproject's ``pythonpath = ["tests"]`` puts this package on the path of every test, benchmark
and conftest, so no test imports another directory's conftest or helper module by name.
"""
