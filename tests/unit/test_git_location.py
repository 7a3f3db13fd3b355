"""Parsing git source URLs, and keeping credentials out of every message."""

from __future__ import annotations

import pytest

from controller.desired.git_source import (
    GitCredentials,
    InvalidGitLocation,
    parse_git_location,
    redact_userinfo,
)


def test_https_url_with_branch_and_path() -> None:
    location = parse_git_location("git+https://host/org/repo.git#branch=prod&path=envs/ds.yaml")
    assert (location.url, location.branch, location.path) == (
        "https://host/org/repo.git",
        "prod",
        "envs/ds.yaml",
    )


def test_defaults_are_main_and_desired_state_yaml() -> None:
    location = parse_git_location("git+ssh://git@host/org/repo.git")
    assert (location.url, location.branch, location.path) == (
        "ssh://git@host/org/repo.git",
        "main",
        "desired_state.yaml",
    )


def test_file_url_is_accepted() -> None:
    assert parse_git_location("git+file:///srv/repo#branch=x").url == "file:///srv/repo"


@pytest.mark.parametrize(
    "text",
    [
        "https://host/repo.git",  # no git+ prefix
        "git+ftp://host/repo.git",
        "git+https:///repo.git",  # no host
        "git+https://host/repo.git#branch=main&ref=x",  # unknown parameter
        "git+https://host/repo.git#path=../etc/passwd",
        "git+https://host/repo.git#branch=--upload-pack=evil",
    ],
)
def test_malformed_locations_are_refused(text: str) -> None:
    with pytest.raises(InvalidGitLocation):
        parse_git_location(text)


def test_credentials_in_the_url_are_redacted_everywhere() -> None:
    location = parse_git_location("git+https://bot:s3cr3t@host/org/repo.git#branch=main")
    assert "s3cr3t" not in location.redacted
    assert (
        location.redacted == "git+https://***@host/org/repo.git#branch=main&path=desired_state.yaml"
    )
    assert "s3cr3t" not in redact_userinfo("fatal: unable to access 'https://bot:s3cr3t@host/x'")
    with pytest.raises(InvalidGitLocation) as caught:
        parse_git_location("git+https://bot:s3cr3t@host/r.git#bad=1")
    assert "s3cr3t" not in str(caught.value)


def test_token_is_given_to_git_through_the_environment_not_the_command_line() -> None:
    env = GitCredentials(token="tok").environment()
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"].startswith("Authorization: Basic ")


def test_ssh_key_and_known_hosts_make_a_strict_ssh_command() -> None:
    env = GitCredentials(ssh_key="/keys/id ed", known_hosts="/keys/kh").environment()
    command = env["GIT_SSH_COMMAND"]
    assert "-i '/keys/id ed'" in command
    assert "StrictHostKeyChecking=yes" in command
    assert "UserKnownHostsFile=/keys/kh" in command
