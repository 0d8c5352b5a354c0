"""Run tiny dense linear algebra single-threaded.

scipy's L-BFGS-B calls BLAS on 5-10-dimensional vectors; OpenBLAS still wakes its thread
pool for them, and on a busy 2-core machine (XLA's own threads, other processes) each
call then waits for the scheduler: the float64 polish ran 10-25x slower than
single-threaded. `threadpoolctl` is the usual tool but is not a dependency; this calls
OpenBLAS's thread-local setter directly on the copies already loaded (numpy's and
scipy's wheels each bundle one) and is a no-op where none is found (other BLAS, non-Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools


@functools.lru_cache(maxsize=1)
def _openblas_setters() -> tuple:
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return ()
    setters = []
    for path in sorted(paths):
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        setters.append(fn)
    return tuple(setters)


@contextlib.contextmanager
def single_threaded_blas():
    """Within the block, OpenBLAS calls from this thread use one thread."""
    setters = _openblas_setters()
    old = [fn(1) for fn in setters]
    try:
        yield
    finally:
        for fn, n in zip(setters, old):
            fn(n)
