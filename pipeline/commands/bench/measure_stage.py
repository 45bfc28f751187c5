"""`python -m pipeline.commands.bench.measure_stage STAGE`, run in the benchmark's copy of the project:
`dvc repro --force --single-item STAGE`, then its seconds, the peak RSS of dvc with the stage (KiB:
ru_maxrss of this process's children) and dvc's exit status, on one line."""

import resource
import subprocess
import sys
import time

if __name__ == "__main__":
    start = time.perf_counter()
    code = subprocess.run(["dvc", "repro", "--force", "--single-item", sys.argv[1]], capture_output=True).returncode
    print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
