"""A study on many machines, with the git remote and the DVC remote as the only shared state.

A worker (`study --worker REMOTE`) takes the plan's runs one at a time. To take a run it pushes a
claim, a commit of its own (an empty tree; the message names the run, the worker and the time), to
refs/study-claims/<commit>/<run> on REMOTE. Git moves a ref only from the value the pusher names
(none, for a new ref), so of two workers claiming the same run the second push is rejected and that
worker takes another run. While a run goes on its worker renews the claim every third of the claim
timeout, by the same compare-and-swap; a claim left unrenewed for the timeout is a dead worker's,
and the next worker takes it over; a renewal that fails while the claim is still this worker's (a
network blip) is tried again at the next look. A finished run is a DVC experiment: its outputs go
to the DVC remote first, then its git ref to REMOTE, so a run REMOTE lists as done can always be
pulled. Every git operation is git's own, never DVC's git client, so a worker reaches REMOTE with
whatever credentials git has (a deploy key in GIT_SSH_COMMAND, a runner's token in the checkout's
http.extraheader, ~/.ssh/config). A worker that can fetch but not push stops at start with one
line. A failed run's claim says so and no worker
takes it again unless a worker is started with --retry-failed. A pushed run's claim is removed. A
worker sent SIGTERM (a scheduler's preemption or eviction) stops its run and removes its claim, so
that another worker takes the run at once. Workers stop once every run is pushed or failed;
`--status` lists each run as done, running, failed or waiting. The collector
(`study --collect-from REMOTE`) fetches the experiments' refs and outputs, each run on its own (a run
whose outputs are lost is named and left out, never failing the rest); the study then writes its
tables from them as on one machine. Claim times are the workers' clocks.
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
from pipeline.lib.remotes import dvc_errors, remote_failure

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


def experiment_ref(commit: str, name: str) -> str:
    """Where DVC keeps experiment `name` run on top of `commit`."""
    return f"refs/exps/{commit[:2]}/{commit[2:]}/{name}"


def pushed_experiments(remote: str, commit: str) -> set[str]:
    """The names of the experiments on top of `commit` that REMOTE holds."""
    listed = git("ls-remote", remote, experiment_ref(commit, "*")).stdout
    return {line.rsplit("/", 1)[1] for line in listed.splitlines()}


def empty_commit(message: str) -> str:
    """A commit of the empty tree, in this worker's name: a claim, or a probe of push access."""
    empty_tree = git("hash-object", "-w", "-t", "tree", "/dev/null").stdout.strip()
    return git(*WORKER_IDENTITY, "commit-tree", empty_tree, "-m", message).stdout.strip()


def check_push_access(remote: str) -> None:
    """A worker that could fetch but not push would run and never publish: push a probe ref of
    its own and remove it, or stop with one line."""
    probe = empty_commit(f"probe by {worker_name()}")
    ref = f"refs/study-probes/{worker_name()}"
    pushed = git("push", "--quiet", "--no-verify", remote, f"{probe}:{ref}", check=False)
    if pushed.returncode:
        raise PipelineError(
            f"git push {remote} failed ({last_line_of(pushed)}): this machine can fetch the repository but not push "
            "to it; give it write access (a deploy key allowed to write, a token with contents: write)"
        )
    git("push", "--quiet", "--no-verify", remote, f":{ref}", check=False)


def claim_moved(remote: str, commit: str, name: str, sha: str) -> bool:
    """Whether REMOTE's claim on `name` is no longer `sha` (taken over, or removed); False when
    REMOTE cannot be asked, since then nothing says it moved."""
    listed = git("ls-remote", remote, claim_ref(commit, name), check=False)
    return listed.returncode == 0 and listed.stdout.split()[:1] != [sha]


def push_claim(
    remote: str, commit: str, name: str, note: str, replacing: str | None, since: float | None = None
) -> str | None:
    """A new claim commit pushed over `replacing` (None: over no claim); its sha, or None when
    another worker's push came first. `since`: when the run started (None: now)."""
    now = time.time()
    sha = empty_commit(f"{note} {name} by {worker_name()} at {now:.6f} since {now if since is None else since:.6f}")
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
                if newer is not None:
                    sha, renewed = newer, time.monotonic()
                elif claim_moved(remote, commit, run.name, sha):
                    stop([process])
                    return sha, None
                # else the push failed with the claim still ours: the next look tries again
    except Stopped:  # the claim first: a scheduler's grace may end before the run has stopped
        withdraw_claim(remote, commit, run.name, sha)
        stop([process])
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
    check_push_access(remote)
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
    """The run's outputs to the DVC remote, then its git ref to REMOTE: only then is it done. If the
    DVC remote refuses them, the claim is withdrawn so that another worker can run it."""
    ref = experiment_ref(commit, name)
    try:
        push_outputs(git("rev-parse", "--verify", ref).stdout.strip())
    except PipelineError as error:
        withdraw_claim(remote, commit, name, sha)
        raise PipelineError(f"{error}; {name} was not published, and another worker may run it") from None
    git("push", "--quiet", "--no-verify", remote, f"{ref}:{ref}")
    withdraw_claim(remote, commit, name, sha)  # pushed: the experiment says it is done


def push_outputs(experiment: str) -> None:
    """The outputs of the experiment commit `experiment` to the default DVC remote, as `dvc exp
    push` sends them, by DVC's API."""
    from dvc.repo import Repo  # slow to import: only the cluster's workers and collector need it

    with Repo() as repo, dvc_errors() as said:
        try:
            repo.push(revs=[experiment], workspace=False)
        except Exception as error:  # DVC's and its filesystems' errors share no base class
            raise remote_failure(None, "dvc push of a run's outputs", "\n".join([*said, str(error)])) from error


def pull(planned: list[Run], remote: str, commit: str) -> None:
    """Fetch the plan's experiments that REMOTE holds, their refs with git and their outputs from
    the DVC remote, a run at a time: a run whose outputs cannot be fetched is named and its ref
    dropped here, so the tables are written from the rest. Failed runs are named too."""
    from dvc.repo import Repo

    check_remote(remote, commit)
    refs = {run.name: experiment_ref(commit, run.name) for run in planned}
    names = [run.name for run in planned if run.name in pushed_experiments(remote, commit)]
    if names:
        git("fetch", "--quiet", remote, *(f"+{refs[name]}:{refs[name]}" for name in names))
    pulled = []
    with Repo() as repo:
        for name in names:
            experiment = git("rev-parse", refs[name]).stdout.strip()
            try:
                repo.fetch(revs=[experiment], workspace=False)
                missing = missing_outputs(repo, experiment)
            except Exception as error:  # DVC's and its filesystems' errors share no base class
                missing = [str(remote_failure(None, "dvc fetch", str(error)))]
            if missing:
                git("update-ref", "-d", refs[name])
                click.echo(f"study: {name} left out, its outputs are not on the DVC remote: {missing[0]}", err=True)
            else:
                pulled.append(name)
    for name, claim in sorted(claims(remote, commit).items()):
        if claim.failed:
            click.echo(f"study: {name} failed on a worker: {claim.subject}", err=True)
    click.echo(f"study: pulled {len(pulled)} of {len(planned)} runs from {remote}", err=True)


def missing_outputs(repo, experiment: str) -> list[str]:
    """The cached outputs of experiment commit `experiment` that the local cache lacks, as paths: a
    fetch only warns of files the DVC remote does not hold."""
    from dvc.repo.fetch import _collect_indexes  # the outputs `dvc fetch` would fetch at a revision

    views = _collect_indexes(repo, revs=[experiment], workspace=False).values()
    return [
        "/".join(key)
        for view in views
        for key, entry in view.data["repo"].iteritems()
        if entry.hash_info and not repo.cache.local.exists(entry.hash_info.value)
    ]


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
