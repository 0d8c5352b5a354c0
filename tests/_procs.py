"""Subprocess helpers for the multi-device tests: an environment with N host CPU devices
(set before jax is imported in the child), a free loopback port, and bounded runs whose
processes are always killed."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "_mesh_driver.py"


def cpu_env(devices: int, **extra: str) -> dict:
    env = dict(os.environ)
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
    for k in [k for k in env if k.startswith("JAXDEPTH_") and k != "JAXDEPTH_CACHE"]:
        del env[k]  # no multi-host settings leak in from the caller
    # cheaper XLA compiles (they dominate these tests); the tests check sharding, not codegen
    flags += " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    env.update(XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}".strip(),
               JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", **extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as f:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, *map(str, args)], env=env, cwd=ROOT,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def kill(procs) -> None:
    """Kill each still-running process's group (its own session), by id."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def wait_all(procs, logs, timeout: float) -> None:
    """Wait for every process (one shared deadline); raise with the logs' tails on a
    timeout or a non-zero exit. The caller kills the processes in `finally`."""
    import time

    deadline = time.monotonic() + timeout
    for p, log in zip(procs, logs):
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"timed out after {timeout:.0f}s:\n{tail(log)}") from None
        if p.returncode != 0:
            raise AssertionError(f"exit code {p.returncode}:\n{tail(log)}")


def tail(log: Path, n: int = 30) -> str:
    lines = [ln for ln in Path(log).read_text(errors="replace").splitlines()
             if not ln.startswith("WARNING:absl")]
    return "\n".join(lines[-n:])


def run_driver(args: list, devices: int, log: Path, timeout: float) -> dict:
    """`python tests/_mesh_driver.py ARGS` with `devices` host devices; its RESULT dict."""
    p = start([DRIVER, *args], cpu_env(devices), log)
    try:
        wait_all([p], [log], timeout)
    finally:
        kill([p])
    line = [ln for ln in log.read_text().splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])
