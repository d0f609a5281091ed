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


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a process with `devices` forced host devices."""
    return f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}"
