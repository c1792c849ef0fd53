"""The whole service on one machine: a supervised Triton and the transformer in front of it.

`Stack` is the one way to start them: ``make serve`` (``python -m stack``), the tests, the
load tests and the benchmarks all use it, with their own ports, environment, model
repository and MediaWiki endpoint.
"""

from stack.launcher import Stack, free_port

__all__ = ["Stack", "free_port"]
