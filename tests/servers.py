"""A team's servers on 127.0.0.1 for the integration tier: moto's S3 server (object storage) and an
asyncssh SSH server that serves git repositories and SFTP (an SSH DVC remote), as a git host and a
file server do. Each runs in a thread of the test process and stops when its `with` block ends."""

from __future__ import annotations

import asyncio
import shlex
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncssh
from moto.server import ThreadedMotoServer

# The only commands the SSH server runs: what git's client asks for to fetch and to push.
GIT_COMMANDS = {"git-upload-pack", "git-receive-pack", "git-upload-archive"}
START_SECONDS = 30


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str = "testing"
    secret_key: str = "testing"


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{server._server.server_port}")
    finally:
        server.stop()


@dataclass(frozen=True)
class SSHServer:
    port: int
    user_key: Path  # the private key the server accepts

    def url(self, path: Path) -> str:
        return f"ssh://git@127.0.0.1:{self.port}{path}"

    def git_ssh_command(self, key: Path | None = None) -> str:
        """GIT_SSH_COMMAND for git and DVC's git client: this key, no host key check, no config."""
        return (
            f"ssh -F /dev/null -i {key or self.user_key} -o IdentitiesOnly=yes -o BatchMode=yes "
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
        )


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
    await process.redirect(stdin=child.stdin, stdout=child.stdout, stderr=child.stderr)
    process.exit(await child.wait())


@contextmanager
def ssh_server(folder: Path) -> Iterator[SSHServer]:
    """An SSH server on a free loopback port that accepts one generated key (written in `folder`)
    for any user, runs git's commands and serves SFTP over the whole file system."""
    user_key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = folder / "id_ed25519"
    user_key.write_private_key(key_path)
    key_path.chmod(0o600)
    loop = asyncio.new_event_loop()
    started: dict[str, object] = {}
    ready = threading.Event()

    async def start() -> None:
        try:
            started["server"] = await asyncssh.listen(
                "127.0.0.1",
                0,
                server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
                authorized_client_keys=asyncssh.import_authorized_keys(user_key.export_public_key().decode()),
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
        yield SSHServer(server.sockets[0].getsockname()[1], key_path)
    finally:

        async def close() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(START_SECONDS)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_SECONDS)
