"""XLA flags of every test process and of the launcher subprocesses the tests start.

The suite compiles thousands of small programs (and runs many models op by op, each op its own
program) and runs few long ones, so most of its time is LLVM optimising code that then runs for
milliseconds. `--xla_backend_optimization_level=0` skips those passes: measured 2026-12-03 on 2
cores, a compile-bound slice of the suite (tests/attention/test_windows.py + tests/models/
test_stn.py) took 94-118 s against 185 s at the default level, while a 300-step learning run
stayed within 5%. It changes no semantics, only instruction selection and scheduling; the
benchmarks and real runs keep XLA's defaults.
"""

TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def xla_flags(devices: int, *, optimize: bool = False) -> str:
    """XLA_FLAGS for a process with `devices` forced host devices; `optimize` keeps XLA's default
    optimisation level, for a learning run whose few programs run hundreds of steps: the default
    experiment's 300-step run took 52 s at the default level and 89 s at level 0 (2026-12-03,
    both at once on 2 cores)."""
    flags = f"--xla_force_host_platform_device_count={devices}"
    return flags if optimize else f"{flags} {TEST_XLA_FLAGS}"
