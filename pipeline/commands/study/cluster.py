"""A study on many machines, with the git remote and the DVC remote as the only shared state.

A worker (`study --worker REMOTE`) takes the plan's runs one at a time. To take a run it pushes a
claim, a commit of its own (an empty tree; the message names the run, the worker and the time), to
refs/study-claims/<commit>/<run> on REMOTE. Git moves a ref only from the value the pusher names
(none, for a new ref), so of two workers claiming the same run the second push is rejected and that
worker takes another run. While a run goes on its worker renews the claim every third of the claim
timeout, by the same compare-and-swap; a claim left unrenewed for the timeout is a dead worker's,
and the next worker takes it over. A finished run is a DVC experiment pushed with `dvc exp push`
(its git ref to REMOTE, its outputs to the DVC remote); a failed run's claim says so and no worker
takes it again unless a worker is started with --retry-failed. A pushed run's claim is removed. A
worker sent SIGTERM (a scheduler's preemption or eviction) stops its run and removes its claim, so
that another worker takes the run at once. Workers stop once every run is pushed or failed;
`--status` lists each run as done, running, failed or waiting. The collector
(`study --collect-from REMOTE`) pulls the experiments with `dvc exp pull`; the study then writes
its tables from them as on one machine. Claim times are the workers' clocks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

import click

from pipeline.commands.study.plan import Run
from pipeline.commands.study.workers import log_path, require_process_groups, start, stop, threads_per_run
from pipeline.lib.errors import PipelineError
from pipeline.lib.remotes import remote_failure

CLAIMS = "refs/study-claims"
IDLE_POLL_SECONDS = 5.0
RUN_POLL_SECONDS = 0.5
WORKER_IDENTITY = ["-c", "user.name=study worker", "-c", "user.email=study-worker@localhost"]


def last_line_of(result: subprocess.CompletedProcess) -> str:
    """What a failed command said last: its error, for a one-line message."""
    said = (result.stderr or result.stdout).strip().splitlines()
    return said[-1] if said else "no output"


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    if check and result.returncode:
        raise PipelineError(f"git {args[0]} failed: {last_line_of(result)}")
    return result


def head() -> str:
    return git("rev-parse", "HEAD").stdout.strip()


def check_remote(remote: str, commit: str) -> None:
    """One line for each way a worker or collector cannot start: no such git remote, or a remote
    that does not hold the study's commit."""
    if git("remote", "get-url", remote, check=False).returncode:
        raise PipelineError(f"no git remote named {remote}: add the shared repository with git remote add {remote} URL")
    if git("fetch", "--quiet", remote, check=False).returncode:
        raise PipelineError(f"git fetch {remote} failed: check the remote's URL and your access to it")
    holding = git("branch", "--remotes", "--contains", commit, "--list", f"{remote}/*", check=False).stdout.split()
    if not holding:
        raise PipelineError(
            f"the git remote {remote} lacks commit {commit[:7]}: push it first (git push {remote} HEAD)"
        )


def check_commit(commit: str | None) -> str:
    """The study's commit: the one the scheduler names, which this clone must have checked out."""
    here = head()
    if commit is None:
        return here
    wanted = git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", check=False).stdout.strip()
    if wanted != here:
        raise PipelineError(f"this clone is at {here[:7]}, the study's plan at {commit}: git checkout {commit} first")
    return here


@dataclass(frozen=True)
class Claim:
    sha: str
    time: int  # the claiming worker's clock at the last renewal, seconds since the epoch
    failed: bool
    subject: str  # "<note> <run> by <worker> at <time> since <first claim's time>"

    @property
    def worker(self) -> str:
        return self.subject.split(" by ", 1)[1].split(" at ", 1)[0]

    @property
    def since(self) -> float:
        return float(self.subject.rsplit(" since ", 1)[1])


class Stopped(Exception):
    """SIGTERM reached the worker: a scheduler preempts or evicts it."""


def stop_on_sigterm(signum, frame) -> None:
    raise Stopped


def claim_ref(commit: str, name: str) -> str:
    return f"{CLAIMS}/{commit}/{name}"


def claims(remote: str, commit: str) -> dict[str, Claim]:
    """The remote's claims on the runs of `commit`, by run name (fetched into the same refs here)."""
    namespace = f"{CLAIMS}/{commit}"
    git("fetch", "--quiet", "--prune", remote, f"+{namespace}/*:{namespace}/*")
    listed = git(
        "for-each-ref", "--format=%(refname:lstrip=3) %(objectname) %(committerdate:unix) %(subject)", namespace
    ).stdout
    found = {}
    for line in listed.splitlines():
        name, sha, stamp, subject = line.split(" ", 3)
        found[name] = Claim(sha, int(stamp), subject.startswith("failed"), subject)
    return found


def pushed_experiments(remote: str, commit: str) -> set[str]:
    """The names of the experiments on top of `commit` that REMOTE holds (DVC's ref layout)."""
    listed = git("ls-remote", remote, f"refs/exps/{commit[:2]}/{commit[2:]}/*").stdout
    return {line.rsplit("/", 1)[1] for line in listed.splitlines()}


def push_claim(
    remote: str, commit: str, name: str, note: str, replacing: str | None, since: float | None = None
) -> str | None:
    """A new claim commit pushed over `replacing` (None: over no claim); its sha, or None when
    another worker's push came first. `since`: when the run started (None: now)."""
    empty_tree = git("hash-object", "-w", "-t", "tree", "/dev/null").stdout.strip()
    now = time.time()
    message = f"{note} {name} by {worker_name()} at {now:.6f} since {now if since is None else since:.6f}"
    sha = git(*WORKER_IDENTITY, "commit-tree", empty_tree, "-m", message).stdout.strip()
    ref = claim_ref(commit, name)
    lease = [f"--force-with-lease={ref}:{replacing}"] if replacing else []
    pushed = git("push", "--quiet", "--no-verify", *lease, remote, f"{sha}:{ref}", check=False)
    return sha if pushed.returncode == 0 else None


def worker_name() -> str:
    return os.environ.get("STUDY_WORKER") or f"{socket.gethostname()}-{os.getpid()}"


def withdraw_claim(remote: str, commit: str, name: str, sha: str) -> None:
    """Remove the claim `sha` (this worker's last), unless another worker has taken it over."""
    ref = claim_ref(commit, name)
    git("push", "--quiet", "--no-verify", f"--force-with-lease={ref}:{sha}", remote, f":{ref}", check=False)


def next_run(left: Sequence[Run], taken: dict[str, Claim], timeout: float) -> tuple[Run, str | None] | None:
    """The first run nobody claimed, else the first whose claim failed (left only when retried) or
    went unrenewed for `timeout`: (run, the claim it replaces)."""
    for run in left:
        if run.name not in taken:
            return run, None
    now = time.time()
    for run in left:
        if taken[run.name].failed or now - taken[run.name].time > timeout:
            return run, taken[run.name].sha
    return None


def run_claimed(run: Run, remote: str, commit: str, sha: str, timeout: float) -> tuple[str, int | None]:
    """Run `run` while renewing its claim; (the last claim's sha, the run's exit status, or None
    when another worker took the claim over, which stops the run)."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(threads_per_run(1))  # the scheduler's choice wins
    process = start(run, os.environ | {"OMP_NUM_THREADS": threads})
    renewed, since = time.monotonic(), time.time()
    try:
        while process.poll() is None:
            time.sleep(RUN_POLL_SECONDS)
            if time.monotonic() - renewed >= timeout / 3:
                newer = push_claim(remote, commit, run.name, "running", replacing=sha, since=since)
                if newer is None:
                    stop([process])
                    return sha, None
                sha, renewed = newer, time.monotonic()
    except Stopped:
        stop([process])
        withdraw_claim(remote, commit, run.name, sha)
        raise PipelineError(
            f"stopped by SIGTERM: {run.name} stopped and its claim removed, so another worker takes it now"
        ) from None
    return sha, process.returncode


def last_line(name: str) -> str:
    lines = log_path(name).read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no output"


def work(planned: list[Run], remote: str, commit: str, timeout: float, retry_failed: bool = False) -> None:
    """Take, run and push runs of the plan until every one is pushed or failed (with
    `retry_failed`, failed runs are taken again)."""
    require_process_groups()
    check_remote(remote, commit)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        take_runs(planned, remote, commit, timeout, retry_failed)
    except Stopped:  # between runs: nothing to hand back
        raise PipelineError("stopped by SIGTERM between runs; no claim held") from None


def take_runs(planned: list[Run], remote: str, commit: str, timeout: float, retry_failed: bool) -> None:
    me = worker_name()
    click.echo(f"study worker {me}: {len(planned)} runs planned on {commit[:7]}, claims on {remote}", err=True)
    ran, tried = 0, set()  # a failed run is retried once per worker, not forever
    while True:
        done, taken = pushed_experiments(remote, commit), claims(remote, commit)
        left = [
            run
            for run in planned
            if run.name not in done
            and not (run.name in taken and taken[run.name].failed and (not retry_failed or run.name in tried))
        ]
        if not left:
            break
        chosen = next_run(left, taken, timeout)
        if chosen is None:  # every run left is under way elsewhere: wait for it, or for its claim to expire
            time.sleep(IDLE_POLL_SECONDS)
            continue
        run, replacing = chosen
        sha = push_claim(remote, commit, run.name, "claim", replacing)
        if sha is None:
            continue  # another worker claimed it first
        click.echo(f"study worker {me}: {run.name} {'taken over' if replacing else 'claimed'}", err=True)
        tried.add(run.name)
        sha, status = run_claimed(run, remote, commit, sha, timeout)
        if status is None:
            click.echo(f"study worker {me}: {run.name} taken over by another worker; stopped", err=True)
        elif status:
            push_claim(remote, commit, run.name, f"failed ({last_line(run.name)})", replacing=sha)
            click.echo(f"study worker {me}: {run.name} failed ({log_path(run.name)})", err=True)
        else:
            publish(run.name, remote, commit, sha)
            ran += 1
            click.echo(f"study worker {me}: {run.name} done", err=True)
    failed = sorted(name for name, claim in taken.items() if claim.failed)
    click.echo(
        f"study worker {me}: ran {ran}; every run of the plan is pushed"
        + (f" or failed ({', '.join(failed)})" if failed else ""),
        err=True,
    )


def publish(name: str, remote: str, commit: str, sha: str) -> None:
    """`dvc exp push`: the experiment's ref to the git remote, its outputs to the DVC remote. If the
    DVC remote refuses them, the claim is withdrawn so that another worker can run it."""
    result = subprocess.run(["dvc", "exp", "push", remote, name], capture_output=True, text=True)
    withdraw_claim(remote, commit, name, sha)  # pushed: the experiment says it is done
    if result.returncode:
        raise PipelineError(
            f"dvc exp push {remote} {name} failed ({last_line_of(result)}): give this machine write access to the DVC "
            "remote (dvc remote list), then start the worker again"
        )


def pull(planned: list[Run], remote: str, commit: str) -> None:
    """`dvc exp pull` of the plan's experiments that REMOTE holds; failed runs named."""
    check_remote(remote, commit)
    names = [run.name for run in planned if run.name in pushed_experiments(remote, commit)]
    if names:
        result = subprocess.run(["dvc", "exp", "pull", remote, *names], capture_output=True, text=True)
        if result.returncode:
            raise remote_failure(None, f"dvc exp pull {remote}", result.stderr + result.stdout)
    for name, claim in sorted(claims(remote, commit).items()):
        if claim.failed:
            click.echo(f"study: {name} failed on a worker: {claim.subject}", err=True)
    click.echo(f"study: pulled {len(names)} of {len(planned)} runs from {remote}", err=True)


def status(planned: list[Run], remote: str, commit: str, timeout: float) -> list[str]:
    """One line per run of the plan: done, running (by whom, since when), failed (its last line),
    stalled (a claim unrenewed for the timeout, which the next worker takes over) or waiting."""
    check_remote(remote, commit)
    done, taken, now = pushed_experiments(remote, commit), claims(remote, commit), time.time()
    lines = []
    for run in planned:
        claim = taken.get(run.name)
        if run.name in done:
            state = "done"
        elif claim is None:
            state = "waiting"
        elif claim.failed:
            state = claim.subject.split(f" {run.name} by ", 1)[0]
        else:
            started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(claim.since))
            stalled = now - claim.time > timeout
            state = f"{'stalled' if stalled else 'running'} on {claim.worker} since {started}"
        lines.append(f"{run.name}  {state}")
    return lines
