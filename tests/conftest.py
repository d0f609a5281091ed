"""Test-wide setup: four forced host devices so that multi-device code runs on a CPU."""

import os
import tempfile

from xla_env import xla_flags

# Must be set before jax is imported anywhere in the test process.
os.environ.setdefault("XLA_FLAGS", xla_flags(4))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Launcher tests start many short processes that compile the same programs: a persistent
# compilation cache shared by the whole session (its subprocesses, and pytest-xdist's workers,
# which share PYTEST_XDIST_TESTRUNUID) compiles each once.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"attn_jax_xla_cache_{_RUN}")
    if _RUN
    else tempfile.mkdtemp(prefix="attn_jax_xla_cache_"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_collection_modifyitems(config, items):
    """Runs tests/integration (the launcher and learning runs, 20-120 s each) first.

    pytest-xdist hands test files to its workers in collection order (pyproject's --dist loadfile
    --no-loadscope-reorder); started last, one long file kept one worker busy while the other had
    nothing left to take. First, the long files spread over both workers and the hundreds of
    small files fill in behind them.
    """
    items.sort(key=lambda item: "tests/integration/" not in item.nodeid.replace("\\", "/"))
