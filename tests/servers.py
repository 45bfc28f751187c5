"""A team's servers on 127.0.0.1 for the integration tier: moto's S3 server (object storage) and an
asyncssh SSH server that serves git repositories and SFTP (an SSH DVC remote), as a git host and a
file server do. Each runs in a thread of the test process and stops when its `with` block ends."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import boto3
import pytest
from moto.server import ThreadedMotoServer

# The only commands the SSH server runs: what git's client asks for to fetch and to push.
GIT_COMMANDS = {"git-upload-pack", "git-receive-pack", "git-upload-archive"}
START_SECONDS = 30

# git reaches the SSH server through OpenSSH's client, as on a team member's machine.
needs_ssh_client = pytest.mark.skipif(
    not (shutil.which("ssh") and shutil.which("ssh-keygen")),
    reason="the SSH server's tests need OpenSSH's client: apt-get install openssh-client",
)


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str

    def write_to(self, home: Path) -> None:
        """A machine's own S3 credentials, where boto (and so DVC) looks for them: ~/.aws/credentials."""
        (home / ".aws").mkdir(parents=True, exist_ok=True)
        (home / ".aws/credentials").write_text(
            f"[default]\naws_access_key_id = {self.access_key}\naws_secret_access_key = {self.secret_key}\n"
        )


@dataclass(frozen=True)
class S3Server:
    """An S3 server that checks each request's signature and the IAM policy of its key: `writer` may
    do anything, `reader` only read."""

    endpoint: str
    writer: Credentials
    reader: Credentials

    @property
    def access_key(self) -> str:
        return self.writer.access_key

    @property
    def secret_key(self) -> str:
        return self.writer.secret_key

    def client(self, service: str = "s3", as_: Credentials | None = None):
        key = as_ or self.writer
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=key.access_key,
            aws_secret_access_key=key.secret_key,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str) -> list[str]:
        return [item["Key"] for item in self.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def iam_user(iam, name: str, actions: list[str]) -> Credentials:
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def moto_api(endpoint: str, action: str, data: bytes = b"") -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/{action}", data, {"Content-Type": "text/plain"})
    urllib.request.urlopen(request, timeout=START_SECONDS)


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port, with a writer and a reader (IAM users of its own),
    checking credentials from the first S3 request on (moto's /moto-api/reset-auth)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    try:
        moto_api(endpoint, "reset")  # no users left from a server before
        iam = boto3.client(
            "iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="-"
        )
        writer = iam_user(iam, "writer", ["s3:*"])
        reader = iam_user(iam, "reader", ["s3:GetObject", "s3:ListBucket"])
        moto_api(endpoint, "reset-auth", b"0")
        yield S3Server(endpoint, writer, reader)
    finally:
        moto_api(endpoint, "reset-auth", b"inf")  # moto's setting is the process's: off for the next server
        server.stop()


@dataclass(frozen=True)
class SSHServer:
    port: int
    host_key: str  # its public host key, as known_hosts lists it
    authorized: asyncssh.SSHAuthorizedKeys  # the client keys it accepts; `authorize` adds one

    def url(self, path: Path) -> str:
        return f"ssh://git@127.0.0.1:{self.port}{path}"

    def authorize(self, public_key: Path) -> None:
        self.authorized.load(public_key.read_text())

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key}\n"


@dataclass(frozen=True)
class Machine:
    """One of the team's machines: a home of its own (SSH key, known hosts, git config, S3
    credentials) and the environment its commands run with, which holds nothing of this process's
    home or credentials."""

    name: str
    home: Path
    environment: dict[str, str]


def machine_environment(home: Path) -> dict[str, str]:
    """This process's environment as a machine whose home is `home` has it: none of this process's
    S3 credentials or SSH settings."""
    kept = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "GIT_SSH"))}
    return kept | {"HOME": str(home)}


def new_machine(home: Path, ssh: SSHServer, credentials: Credentials, ssh_settings: str | None = "config") -> Machine:
    """A machine with its own S3 credentials, and its own SSH key the SSH server accepts, the
    server's key in its known_hosts.

    ssh_settings: "config", a person's: ~/.ssh/config names the key, and ~/.gitconfig's
    core.sshCommand points git at that file (OpenSSH reads the passwd entry's home, not $HOME);
    "GIT_SSH_COMMAND", a deploy key's, as a CI job or a Kubernetes pod has it: the key and the known
    hosts only in that variable, no SSH or git config at all; None, a GitHub runner's: no SSH at
    all, git reaches the repository over HTTP with the token its checkout holds."""
    ssh_folder = home / ".ssh"
    ssh_folder.mkdir(parents=True)
    environment = machine_environment(home) | {"GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
    credentials.write_to(home)
    if ssh_settings is not None:
        environment |= ssh_identity(ssh_folder, ssh, ssh_settings)
    for name, value in (("user.name", home.name), ("user.email", f"{home.name}@example.com")):
        subprocess.run(["git", "config", "--global", name, value], env=environment, check=True)
    return Machine(home.name, home, environment)


def ssh_identity(ssh_folder: Path, ssh: SSHServer, ssh_settings: str) -> dict[str, str]:
    """A key of its own in `ssh_folder`, accepted by `ssh`, set up as `ssh_settings` says; the
    environment variables it takes."""
    key = ssh_folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ssh.authorize(key.with_suffix(".pub"))
    known_hosts = ssh_folder / "known_hosts"
    known_hosts.write_text(ssh.known_hosts_line())
    checked = f"UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o LogLevel=ERROR"
    if ssh_settings == "GIT_SSH_COMMAND":
        return {"GIT_SSH_COMMAND": f"ssh -F /dev/null -i {key} -o IdentitiesOnly=yes -o {checked}"}
    else:
        config = ssh_folder / "config"
        config.write_text(
            f"Host 127.0.0.1\n  Port {ssh.port}\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known_hosts}\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n"
        )
        (ssh_folder.parent / ".gitconfig").write_text(f"[core]\n\tsshCommand = ssh -F {config}\n")
        return {}


async def run_git_command(process: asyncssh.SSHServerProcess) -> None:
    """Run the git command the client asked for, its streams joined to the SSH channel."""
    words = shlex.split(process.command or "")
    if not words or words[0] not in GIT_COMMANDS:
        process.stderr.write(f"this server runs only {', '.join(sorted(GIT_COMMANDS))}\n".encode())
        process.exit(1)
        return
    child = await asyncio.create_subprocess_exec(
        *words, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )

    async def copy(source, destination, close: bool) -> None:
        while data := await source.read(1 << 16):
            destination.write(data)
            await destination.drain()
        if close:
            destination.close()  # the client's end of input: the command's stdin closes

    feeding = asyncio.ensure_future(copy(process.stdin, child.stdin, close=True))
    await asyncio.gather(copy(child.stdout, process.stdout, False), copy(child.stderr, process.stderr, False))
    feeding.cancel()  # the command ended: what the client still sends goes nowhere
    process.exit(await child.wait())


@contextmanager
def ssh_server() -> Iterator[SSHServer]:
    """An SSH server on a free loopback port that accepts the keys it is told of (`authorize`) for
    any user, runs git's commands and serves SFTP over the whole file system."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    authorized = asyncssh.import_authorized_keys("")
    loop = asyncio.new_event_loop()
    started: dict[str, object] = {}
    ready = threading.Event()

    async def start() -> None:
        try:
            started["server"] = await asyncssh.listen(
                "127.0.0.1",
                0,
                server_host_keys=[host_key],
                authorized_client_keys=authorized,
                process_factory=run_git_command,
                sftp_factory=True,
                allow_scp=False,
                encoding=None,  # git speaks bytes
            )
        except Exception as error:  # surfaced in the test's thread below
            started["error"] = error
        ready.set()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.create_task(start())
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    if not ready.wait(START_SECONDS) or "error" in started:
        raise RuntimeError(f"the SSH server did not start: {started.get('error', 'timed out')}")
    server = started["server"]
    try:
        yield SSHServer(server.sockets[0].getsockname()[1], host_key.export_public_key().decode().strip(), authorized)
    finally:

        async def close() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(START_SECONDS)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_SECONDS)


def basic_credentials(token: str) -> str:
    return base64.b64encode(f"x-access-token:{token}".encode()).decode()


class GitHTTPHandler(http.server.BaseHTTPRequestHandler):
    """git's smart HTTP protocol, as a git host serves it: git's own `git http-backend` (CGI) behind
    a check of HTTP basic auth, the token as its password, as GitHub takes a runner's GITHUB_TOKEN."""

    root: Path  # the folder of bare repositories
    token: str

    def do_GET(self) -> None:
        self.serve()

    def do_POST(self) -> None:
        self.serve()

    def log_message(self, *args) -> None:
        pass

    def body(self) -> bytes:
        if self.headers.get("Transfer-Encoding") == "chunked":  # git sends large pushes in chunks
            chunks = []
            while size := int(self.rfile.readline().strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def serve(self) -> None:
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic" or credentials != basic_credentials(self.token):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        environment = {
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": "x-access-token",  # an authenticated user may push
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "PATH": os.environ["PATH"],
        }
        result = subprocess.run(["git", "http-backend"], input=self.body(), capture_output=True, env=environment)
        head, _, content = result.stdout.partition(b"\r\n\r\n")
        headers = [line.split(": ", 1) for line in head.decode().split("\r\n") if ": " in line]
        status = next((int(value.split()[0]) for name, value in headers if name == "Status"), 200)
        self.send_response(status)
        for name, value in headers:
            if name != "Status":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)


@dataclass(frozen=True)
class GitHTTPServer:
    url: str  # of the folder of repositories
    token: str

    def extraheader(self) -> str:
        """The header actions/checkout writes into a checkout's git config, holding the token."""
        return f"AUTHORIZATION: basic {basic_credentials(self.token)}"


@contextmanager
def git_http_server(root: Path) -> Iterator[GitHTTPServer]:
    """The bare repositories in `root` over git's smart HTTP on a free loopback port, for clients
    that send a token generated here."""
    token = secrets.token_hex(16)
    handler = type("Handler", (GitHTTPHandler,), {"root": root, "token": token})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield GitHTTPServer(f"http://127.0.0.1:{server.server_port}", token)
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Team:
    """A team's servers: a bare git repository `repo.git` in `folder`, served over SSH and over
    HTTP with a token, and the S3 server. `machine` makes one of its machines."""

    ssh: SSHServer
    s3: S3Server
    http: GitHTTPServer
    folder: Path

    @property
    def repo_url(self) -> str:
        return self.ssh.url(self.folder / "repo.git")

    @property
    def http_repo_url(self) -> str:
        return f"{self.http.url}/repo.git"

    def machine(self, name: str, ssh_settings: str | None = "config", reader: bool = False) -> Machine:
        credentials = self.s3.reader if reader else self.s3.writer
        return new_machine(self.folder.parent / "homes" / name, self.ssh, credentials, ssh_settings)


# SLURM from Debian's packages: .ci/run installs them; elsewhere its test is skipped, saying so.
needs_slurm = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged", "mungekey")),
    reason="the SLURM test needs Debian's slurm-wlm and munge: apt-get install slurm-wlm munge",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Slurm:
    environment: dict[str, str]  # what its commands (sbatch, squeue, scontrol) need: SLURM_CONF

    def run(self, *command: str, env: dict[str, str] | None = None, check: bool = True) -> str:
        result = subprocess.run(command, capture_output=True, text=True, env=(env or os.environ) | self.environment)
        assert result.returncode == 0 or not check, f"{command}: {result.stderr}"
        return result.stdout


@contextmanager
def slurm_cluster(folder: Path) -> Iterator[Slurm]:
    """A one-node SLURM cluster on 127.0.0.1: munged, slurmctld and slurmd in the foreground, with
    their key, config, state and logs in `folder`, on free ports; every job cancelled and every
    daemon stopped after."""
    for name in ("munge", "state", "spool", "log"):
        (folder / name).mkdir(parents=True)
    munge = folder / "munge"
    subprocess.run(["mungekey", "--create", f"--keyfile={munge / 'munge.key'}"], check=True)
    host = socket.gethostname().split(".")[0]  # slurmctld runs where its name says
    config = folder / "slurm.conf"
    config.write_text(
        f"ClusterName=tests\nSlurmctldHost={host}(127.0.0.1)\nSlurmctldPort={free_port()}\nSlurmdPort={free_port()}\n"
        f"AuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket={munge / 'socket'}\n"
        "SlurmUser=root\nSlurmdUser=root\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
        "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nJobAcctGatherType=jobacct_gather/none\n"
        "AccountingStorageType=accounting_storage/none\nReturnToService=2\nMpiDefault=none\n"
        f"StateSaveLocation={folder / 'state'}\nSlurmdSpoolDir={folder / 'spool'}\n"
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}\nSlurmdPidFile={folder / 'slurmd.pid'}\n"
        # A node as large as the recipe asks for twice (2 CPUs, 8 GB a task), whatever this machine has.
        "SlurmdParameters=config_overrides\nNodeName=node1 NodeAddr=127.0.0.1 CPUs=4 RealMemory=16384 State=UNKNOWN\n"
        "PartitionName=tests Nodes=node1 Default=YES MaxTime=INFINITE State=UP\n"
    )
    slurm = Slurm({"SLURM_CONF": str(config)})
    environment = os.environ | slurm.environment
    daemons = []
    try:
        for name, command in (
            ("munged", ["munged", "--foreground", "--force", f"--key-file={munge / 'munge.key'}",
                        f"--socket={munge / 'socket'}", f"--pid-file={munge / 'pid'}",
                        f"--seed-file={munge / 'seed'}"]),
            ("slurmctld", ["slurmctld", "-D"]),
            ("slurmd", ["slurmd", "-D", "-N", "node1"]),
        ):  # fmt: skip
            log = (folder / "log" / f"{name}.log").open("w")
            daemons.append(subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT))
            if name == "munged":
                wait_for(lambda: (munge / "socket").exists(), folder / "log/munged.log")
        wait_for(
            lambda: slurm.run("sinfo", "--noheader", "--format=%T").strip() == "idle", folder / "log/slurmctld.log"
        )
        yield slurm
    finally:
        if daemons[1:]:
            subprocess.run(["scancel", "--full", "--partition=tests"], env=environment, capture_output=True)
        for daemon in reversed(daemons):
            daemon.terminate()
            try:
                daemon.wait(START_SECONDS)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def wait_for(ready, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not ready():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
