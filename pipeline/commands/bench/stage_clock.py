"""`python` while bench times a whole `dvc repro` in its copy of the project (stages.py puts a
script that runs this module first on PATH): it runs the real interpreter with the same arguments,
then appends the command, its seconds and its peak RSS (KiB: ru_maxrss of this process's children)
to the file that CLOCK_FILE names. So one `dvc repro` times every stage, each on its own."""

import json
import os
import resource
import subprocess
import sys
import time

CLOCK_FILE = "BENCH_CLOCK_FILE"

if __name__ == "__main__":
    start = time.perf_counter()
    code = subprocess.call([sys.executable, *sys.argv[1:]])
    record = {
        "command": sys.argv[1:],
        "seconds": time.perf_counter() - start,
        "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "code": code,
    }
    with open(os.environ[CLOCK_FILE], "a") as clock:
        clock.write(json.dumps(record) + "\n")
    sys.exit(code)
