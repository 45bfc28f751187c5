"""What every command shares: --debug and one-line errors; the stages also --params.

A PipelineError (or an OS error such as a full disk) ends the command with
`error: <what and how to fix it>` on stderr and exit status 1; --debug shows
the traceback instead.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import click

from pipeline.lib.errors import PipelineError
from pipeline.lib.params import DEFAULT_PARAMS, Params, load_params
from pipeline.lib.pinning import numerics_mode

PATH = click.Path(path_type=Path)
DISTRIBUTION = "mnist-mlp-pipeline"  # pyproject.toml's project name: --version reports its version
CONTEXT = {"help_option_names": ["-h", "--help"]}


def command_of(function: Callable[..., None]) -> click.Command:
    """A Click command with -h as well as --help, and --version."""
    return click.command(context_settings=CONTEXT)(click.version_option(package_name=DISTRIBUTION)(function))


# A stage writes under temporary names and renames only once it has succeeded, but DVC removes the
# previous outputs of a stage that keeps none (its run-cache needs that) before running it.
INTERRUPTED = (
    "interrupted: no result of this run was renamed into place; if DVC had removed the previous ones, "
    "git checkout -- reports && dvc checkout brings back those of the last commit"
)


def fail(message: str, exit_code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(exit_code)


def run_reporting_errors(action: Callable[[], None], debug: bool, exit_code: int = 1) -> None:
    """Run `action` after checking MNIST_NUMERICS; a problem the user can fix becomes one line
    and `exit_code`."""
    try:
        numerics_mode()
        action()
    except PipelineError as error:
        if debug:
            raise
        fail(str(error), exit_code)
    except BrokenPipeError:
        # The reader stopped early (`| head`): nothing to report. Python would complain again when
        # it flushes stdout on the way out, so stdout goes to /dev/null first (the Python docs' recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as error:
        if debug:
            raise
        where = f"{error.filename}: " if error.filename else ""
        fail(f"{where}{error.strerror or error}: check the path, its permissions and free disk space", exit_code)


def user_command(error_status: int = 1) -> Callable[[Callable[..., int | None]], click.Command]:
    """A `python -m pipeline NAME` command: --debug, a problem the user can fix as one line and exit
    status `error_status`, and the function's return value (None: 0) as the exit status."""

    def decorate(function: Callable[..., int | None]) -> click.Command:
        @click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
        @functools.wraps(function)
        def command(debug: bool, **options) -> None:
            outcome: list[int | None] = []
            run_reporting_errors(lambda: outcome.append(function(**options)), debug, error_status)
            if outcome and outcome[0]:
                sys.exit(outcome[0])

        return command_of(command)

    return decorate


def stage_command(function: Callable[..., None]) -> click.Command:
    """A Click command calling `function(params, **options)` after validating the whole params file."""

    @click.option(
        "--params",
        "params_path",
        type=PATH,
        default=DEFAULT_PARAMS,
        show_default=True,
        help="Params file to validate and use.",
    )
    @click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
    @functools.wraps(function)
    def command(params_path: Path, debug: bool, **options) -> None:
        def action() -> None:
            params: Params = load_params(params_path)
            try:
                function(params, **options)
            except KeyboardInterrupt:
                fail(INTERRUPTED, exit_code=130)

        run_reporting_errors(action, debug)

    return command_of(command)


def run_stage(command: click.Command) -> NoReturn:
    """Run a stage as `dvc repro` does (`python -m pipeline.stages.NAME`) and end the process at once.

    By then its results are renamed into place and closed; all Python would still do is tear down
    torch's thousands of modules, which nothing needs.
    """
    try:
        command.main()
    except SystemExit as exit:  # how Click ends every command, error or not
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1)
    raise AssertionError("a Click command in standalone mode always exits")
