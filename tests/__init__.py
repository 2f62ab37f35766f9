"""virtlab test suite (a package, so that ``tests.helpers`` is ours whatever else is installed)."""
