"""Fails at import time, like a plugin whose dependency is missing."""

import lossbench_dependency_that_is_not_installed  # noqa: F401
