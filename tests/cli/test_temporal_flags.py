"""Which server a command talks to: flag, then the Temporal CLI's environment variables, then
its config file profile, then the defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from client.errors import CommandError
from client.temporal_flags import add_temporal_flags, connection_flags, resolve_target


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_temporal_flags(parser)
    return parser.parse_args(argv)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("TEMPORAL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "absent.toml"))


def test_defaults_then_profile_then_environment_then_flags(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_target(parse()).address == "localhost:7233"
    assert resolve_target(parse()).namespace == "default"
    assert resolve_target(parse()).tls is False

    config = tmp_path / "temporal.toml"
    config.write_text('[profile.default]\naddress = "from-file:7233"\nnamespace = "file-ns"\n'
                      '[profile.prod]\naddress = "prod:7233"\napi_key = "k"\n')
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))
    assert resolve_target(parse()).address == "from-file:7233"
    assert resolve_target(parse()).namespace == "file-ns"
    prod = resolve_target(parse("--profile", "prod"))
    assert (prod.address, prod.api_key, prod.tls) == ("prod:7233", "k", True)

    monkeypatch.setenv("TEMPORAL_ADDRESS", "from-env:7233")
    assert resolve_target(parse()).address == "from-env:7233"
    assert resolve_target(parse()).namespace == "file-ns"
    target = resolve_target(parse("--address", "flag:7233", "--namespace", "flag-ns"))
    assert (target.address, target.namespace) == ("flag:7233", "flag-ns")


def test_tls_files_are_read_and_a_missing_one_is_an_input_error(tmp_path: Path) -> None:
    cert, key, ca = (tmp_path / n for n in ("c.pem", "k.pem", "ca.pem"))
    for path in (cert, key, ca):
        path.write_bytes(f"-----BEGIN {path.name}".encode())

    target = resolve_target(parse("--tls-cert-path", str(cert), "--tls-key-path", str(key),
                                  "--tls-ca-path", str(ca), "--tls-server-name", "temporal"))

    assert isinstance(target.tls, TLSConfig)
    assert (target.tls.client_cert, target.tls.client_private_key,
            target.tls.server_root_ca_cert, target.tls.domain) == (
        b"-----BEGIN c.pem", b"-----BEGIN k.pem", b"-----BEGIN ca.pem", "temporal")
    with pytest.raises(CommandError) as error:
        resolve_target(parse("--tls-ca-path", str(tmp_path / "nope.pem")))
    assert error.value.exit_code == 1 and "cannot read CA certificate" in str(error.value)


def test_api_key_implies_tls_and_an_unknown_profile_is_an_input_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_API_KEY", "secret")
    target = resolve_target(parse())
    assert (target.api_key, target.tls) == ("secret", True)
    assert target.connect_options() == {"tls": True, "api_key": "secret",
                                        "identity": target.identity}
    with pytest.raises(CommandError) as error:
        resolve_target(parse("--profile", "nope"))
    assert error.value.exit_code == 1


def test_suggested_commands_repeat_the_connection_flags_typed() -> None:
    assert connection_flags(parse()) == ""
    assert connection_flags(parse("--address", "a:1", "--namespace", "n")) == (
        " --address a:1 --namespace n")


def test_the_client_names_its_user_and_host_unless_told_otherwise(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setenv("USER", "carol")
    monkeypatch.delenv("CILIUM_MIGRATE_IDENTITY", raising=False)
    default = resolve_target(parse())
    assert default.identity == f"carol@{socket.gethostname()} cilium-migrate"
    assert default.connect_options()["identity"] == default.identity

    monkeypatch.setenv("CILIUM_MIGRATE_IDENTITY", "change-bot")
    assert resolve_target(parse()).identity == "change-bot"
    assert resolve_target(parse("--identity", "carol via jump-1")).identity == "carol via jump-1"
