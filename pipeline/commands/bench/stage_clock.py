"""`python` while bench times a whole `dvc repro` in its copy of the project (stages.py puts a
stand-in that runs this module first on PATH): it runs the real interpreter with the same
arguments, then appends the command, its seconds and its peak RSS to the file that CLOCK_FILE
names. So one `dvc repro` times every stage, each on its own."""

import json
import os
import subprocess
import sys
import time

CLOCK_FILE = "BENCH_CLOCK_FILE"


def children_peak_kib() -> int | None:
    """The peak RSS of this process's finished children in KiB, where the OS keeps it: POSIX's
    getrusage, in KiB on Linux and in bytes on macOS. Windows has no such count: None."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


if __name__ == "__main__":
    start = time.perf_counter()
    code = subprocess.call([sys.executable, *sys.argv[1:]])
    record = {"command": sys.argv[1:], "seconds": time.perf_counter() - start, "peak_kib": children_peak_kib()}
    with open(os.environ[CLOCK_FILE], "a") as clock:
        clock.write(json.dumps(record | {"code": code}) + "\n")
    sys.exit(code)
