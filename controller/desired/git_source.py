"""A desired-state source in a git repository (contract section 4).

`git+https://host/org/repo.git#branch=main&path=desired_state.yaml` (also `git+ssh://`,
`git+file://`, and `git+http://` for servers on a private network). Each fetch is shallow
(`--depth=1`) into a bare cache repository, bounded by a timeout; the revision is the commit.
Credentials come from the environment and never appear in a log line, an error or `/status`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shlex
import shutil
import signal
import tempfile
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

from controller.core.desired_state import DEFAULT_MAX_DESIRED_STATE_BYTES
from controller.desired.loader import InvalidDesiredState, Problem, parse_desired_state, too_large
from controller.desired.source import SourceSnapshot, SourceUnavailable

log = structlog.get_logger("infra_controller.git")

SCHEMES = ("git+https://", "git+ssh://", "git+file://", "git+http://")
_USERINFO = re.compile(r"(?P<scheme>[a-z+]+://)[^/@\s]+@")


class InvalidGitLocation(ValueError):
    pass


@dataclass(frozen=True)
class GitLocation:
    url: str  # what git fetches from (no `git+`, no fragment)
    branch: str
    path: str

    @property
    def redacted(self) -> str:
        return f"git+{redact_userinfo(self.url)}#branch={self.branch}&path={self.path}"


def redact_userinfo(text: str) -> str:
    """`https://user:token@host/...` -> `https://***@host/...`, anywhere in a text."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def parse_git_location(text: str) -> GitLocation:
    if not text.startswith(SCHEMES):
        raise InvalidGitLocation(
            f"{redact_userinfo(text)}: a git source starts with one of {', '.join(SCHEMES)}"
        )
    url, _, fragment = text.removeprefix("git+").partition("#")
    params = {key: values[-1] for key, values in parse_qs(fragment, keep_blank_values=True).items()}
    unknown = set(params) - {"branch", "path"}
    if unknown:
        raise InvalidGitLocation(
            f"{redact_userinfo(text)}: unknown parameter(s) {', '.join(sorted(unknown))}; "
            "expected #branch=BRANCH&path=PATH"
        )
    parts = urlsplit(url)
    if parts.scheme != "file" and not parts.hostname:
        raise InvalidGitLocation(f"{redact_userinfo(text)}: the URL has no host")
    if parts.scheme == "file" and not parts.path:
        raise InvalidGitLocation(f"{text}: the URL has no path")
    branch = params.get("branch") or "main"
    path = (params.get("path") or "desired_state.yaml").lstrip("/")
    if ".." in path.split("/") or not path:
        raise InvalidGitLocation(
            f"{redact_userinfo(text)}: path must be a file inside the repository"
        )
    if branch.startswith("-") or not re.fullmatch(r"[A-Za-z0-9._/-]+", branch):
        raise InvalidGitLocation(f"{redact_userinfo(text)}: invalid branch name {branch!r}")
    return GitLocation(url=url, branch=branch, path=path)


@dataclass(frozen=True)
class GitCredentials:
    """HTTPS: a token (sent as basic auth); SSH: a key file and a known_hosts file."""

    token: str | None = None
    username: str = "x-access-token"
    ssh_key: str | None = None
    known_hosts: str | None = None

    def _basic(self) -> str | None:
        if not self.token:
            return None
        return base64.b64encode(f"{self.username}:{self.token}".encode()).decode()

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if (basic := self._basic()) is not None:
            # given through the environment, so the token is in no command line
            env.update(
                GIT_CONFIG_COUNT="1",
                GIT_CONFIG_KEY_0="http.extraHeader",
                GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
            )
        if self.ssh_key or self.known_hosts:
            command = ["ssh", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
            if self.ssh_key:
                command += ["-i", self.ssh_key]
            if self.known_hosts:
                command += [
                    "-o",
                    f"UserKnownHostsFile={self.known_hosts}",
                    "-o",
                    "StrictHostKeyChecking=yes",
                ]
            env["GIT_SSH_COMMAND"] = shlex.join(command)
        return env

    def secrets(self) -> list[str]:
        basic = self._basic()
        return [self.token, basic] if self.token and basic else []


def credentials_from_url(url: str) -> tuple[str, tuple[str, str] | None]:
    """`https://user:secret@host/r.git` -> (`https://host/r.git`, (user, secret)): a secret in
    a URL would show in `ps` during every fetch, so it travels in the environment instead. A
    URL with a user and no password (`https://TOKEN@host`) carries the token as the user."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, None  # ssh users are not secrets; file URLs have none
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = parts._replace(netloc=host).geturl()
    return bare, (unquote(user), unquote(password)) if password else (
        "x-access-token",
        unquote(user),
    )


class GitSource:
    def __init__(
        self,
        location: GitLocation,
        credentials: GitCredentials | None = None,
        timeout: float = 60.0,
        cache_dir: str | None = None,
        max_bytes: int = DEFAULT_MAX_DESIRED_STATE_BYTES,
    ) -> None:
        self.location = location
        self.max_bytes = max_bytes
        self.credentials = credentials or GitCredentials()
        self._fetch_url, from_url = credentials_from_url(location.url)
        if from_url is not None and self.credentials.token is None:
            username, token = from_url
            self.credentials = replace(self.credentials, username=username, token=token)
        self.timeout = timeout
        self.description = location.redacted
        self._cache_dir = cache_dir
        self._owns_cache = cache_dir is None
        self._initialised = False
        self._closed = False
        self._last: SourceSnapshot | None = None

    def _redact(self, text: str) -> str:
        for secret in self.credentials.secrets():
            text = text.replace(secret, "***")
        return redact_userinfo(text)

    async def _git(self, *args: str) -> str:
        assert self._cache_dir is not None
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self._cache_dir,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_ASKPASS": "/bin/false",
            "LC_ALL": "C",
            **self.credentials.environment(),
        }
        process = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=self._cache_dir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own group: `git fetch` runs helpers (git-remote-http)
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), self.timeout)
        except TimeoutError:
            await _kill_group(process)
            raise SourceUnavailable(
                f"git {args[0]} from {self.description} timed out after {self.timeout:g}s"
            ) from None
        except asyncio.CancelledError:
            # a shutdown during a fetch: nothing may outlive the controller, nor write into a
            # cache directory that close() is about to remove
            await _kill_group(process)
            raise
        if process.returncode != 0:
            message = err.decode(errors="replace").strip().splitlines()
            detail = (
                "; ".join(line for line in message if line)[-500:] or f"exit {process.returncode}"
            )
            raise SourceUnavailable(
                self._redact(f"git {args[0]} from {self.description}: {detail}")
            )
        return out.decode(errors="replace")

    async def _prepare(self) -> None:
        if self._initialised:
            return
        if self._closed:
            raise SourceUnavailable(f"{self.description}: the source is closed")
        if self._cache_dir is None:
            # one mkdir, not in a worker thread: a fetch cancelled while a thread made the
            # directory would leave it behind, unknown to close()
            self._cache_dir = tempfile.mkdtemp(prefix="infra-controller-git-")
        await self._git("init", "--quiet", "--bare", ".")
        self._initialised = True

    async def fetch(self) -> SourceSnapshot:
        await self._prepare()
        ref = f"refs/heads/{self.location.branch}"
        await self._git(
            "fetch",
            "--quiet",
            "--depth=1",
            "--no-tags",
            "--force",
            "--",
            self._fetch_url,
            f"+{ref}:{ref}",
        )
        commit = (await self._git("rev-parse", "--verify", f"{ref}^{{commit}}")).strip()
        if self._last is not None and self._last.revision == commit:
            return self._last  # the same commit: not parsed (nor reported) again
        blob = f"{commit}:{self.location.path}"
        try:
            size = int((await self._git("cat-file", "-s", blob)).strip())
            # the size first: an oversized file is refused without being read
            text = "" if size > self.max_bytes else await self._git("show", blob)
        except (SourceUnavailable, ValueError):
            snapshot = SourceSnapshot(
                revision=commit,
                loaded=None,
                problems=[
                    Problem(
                        self.location.path,
                        1,
                        1,
                        f"not found in commit {commit[:12]} of branch {self.location.branch}",
                    )
                ],
            )
        else:
            try:
                if size > self.max_bytes:
                    raise too_large(self.location.path, self.max_bytes)
                # parsed in a worker thread: a hostile document never blocks the event loop
                loaded = await asyncio.to_thread(
                    parse_desired_state, text, self.location.path, max_bytes=self.max_bytes
                )
                snapshot = SourceSnapshot(commit, loaded)
            except InvalidDesiredState as exc:
                snapshot = SourceSnapshot(revision=commit, loaded=None, problems=exc.problems)
        self._last = snapshot
        return snapshot

    async def watch(self, notify: object) -> None:
        """A remote is not watched: it is polled every interval, or pushed through the webhook."""
        await asyncio.Event().wait()

    def close(self) -> None:
        """Remove the cache directory this source made (one it was given is left as it is)."""
        self._closed = True
        if self._owns_cache and self._cache_dir is not None:
            shutil.rmtree(self._cache_dir, ignore_errors=True)
            self._cache_dir = None
            self._initialised = False


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()
