"""Run by every Python process started with this folder on PYTHONPATH: it takes away what only
Linux has (or, for os.killpg and resource, what Windows lacks), so the tests that run the stages,
`dvc repro` and the unit tier this way prove the project needs none of it (docs/platforms.md).

Set WITHOUT_LINUX_APIS_LOG to a file to have each refusal written there, a line each.

Importing `resource` and opening a path under /proc or /sys/fs/cgroup fail as on Windows, but only
in the project's own code (the pipeline package, wherever a test copied it, and tests/): the
libraries it uses (psutil, for one) have Linux modules that need them on Linux and modules of their
own for the other systems.
"""

import builtins
import errno
import os
import sys
import sysconfig

for name in ("sched_getaffinity", "sched_setaffinity", "killpg"):
    if hasattr(os, name):
        delattr(os, name)

LINUX_ONLY = ("/proc/", "/sys/fs/cgroup/")
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
STANDARD_LIBRARY = sysconfig.get_paths()["stdlib"] + os.sep
real_import = builtins.__import__
REFUSALS = os.environ.get("WITHOUT_LINUX_APIS_LOG")


def refused(what: str, module_globals: dict) -> None:
    if REFUSALS:
        spec = module_globals.get("__spec__")
        with open(REFUSALS, "a") as log:
            log.write(f"{what} in {spec.name if spec else module_globals.get('__name__')}\n")


def own_code(module_globals: dict) -> bool:
    spec = module_globals.get("__spec__")  # `python -m pipeline.stages.train` runs as __main__
    name = spec.name if spec is not None else module_globals.get("__name__") or ""
    return name.split(".")[0] == "pipeline" or str(module_globals.get("__file__")).startswith(TESTS)


def import_without_resource(name, globals=None, locals=None, fromlist=(), level=0):
    if name == "resource" and level == 0 and own_code(globals or {}):
        refused("import resource", globals)
        raise ModuleNotFoundError("No module named 'resource' (tests/without_linux_apis)", name=name)
    return real_import(name, globals, locals, fromlist, level)


def opener() -> dict | None:
    """The globals of the first frame outside the standard library (pathlib, io, ...) if it is the
    project's, else None."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(STANDARD_LIBRARY):
        frame = frame.f_back
    return frame.f_globals if frame is not None and own_code(frame.f_globals) else None


def refuse_linux_only_paths(event: str, args: tuple) -> None:
    if event != "open" or not isinstance(args[0], str | bytes | os.PathLike):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if not (path.startswith(LINUX_ONLY) or path + "/" in LINUX_ONLY):
        return
    module_globals = opener()
    if module_globals is not None:
        refused(f"open {path}", module_globals)
        raise FileNotFoundError(errno.ENOENT, "not on this system (tests/without_linux_apis)", path)


builtins.__import__ = import_without_resource
sys.addaudithook(refuse_linux_only_paths)
