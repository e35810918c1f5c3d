"""Root conftest: shared fixtures live in plugin modules, one per area, so areas don't collide."""

pytest_plugins = [
    "tests.plugins.db",
    "tests.plugins.sim",
]
