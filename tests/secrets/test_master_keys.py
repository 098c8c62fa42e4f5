"""Loading master keys from the environment or a file; reprs that never leak keys."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import msgspec
import pytest

from gristmill.common.errors import InvalidRequest
from gristmill.common.secrets import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
    MasterKeyring,
    WorkspaceKeys,
    encrypt_secret,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
B64_A = base64.b64encode(KEY_A).decode()
B64_B = base64.b64encode(KEY_B).decode()
B64_SHORT = base64.b64encode(bytes(16)).decode()
B64_LONG = base64.b64encode(bytes(33)).decode()


@pytest.mark.parametrize(
    ("value", "active", "ids"),
    [
        pytest.param(B64_A, "default", ("default",), id="bare"),
        pytest.param(f"  {B64_A}\n", "default", ("default",), id="bare-with-spaces"),
        pytest.param(f"k1:{B64_A}", "k1", ("k1",), id="with-id"),
        pytest.param(f"k2:{B64_B},k1:{B64_A}", "k2", ("k2", "k1"), id="two-comma"),
        pytest.param(f"k2:{B64_B}\n k1:{B64_A}", "k2", ("k2", "k1"), id="two-newline"),
        pytest.param(f"2025-01.b_x:{B64_B}", "2025-01.b_x", ("2025-01.b_x",), id="id-chars"),
    ],
)
def test_load_from_env(value: str, active: str, ids: tuple[str, ...]) -> None:
    keyring = MasterKeyring.from_env_or_file({MASTER_KEY_ENV: value})
    assert keyring.active_id == active
    assert keyring.key_ids == ids


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    path.write_text(f"# rotated 2025-01\nk2:{B64_B}\n\n  # old, until rewrapped\nk1:{B64_A}\n")
    keyring = MasterKeyring.from_env_or_file({MASTER_KEY_FILE_ENV: str(path)})
    assert keyring.key_ids == ("k2", "k1")
    # The same keys, however loaded, unwrap each other's data keys.
    stored = WorkspaceKeys.create("main").wrap(keyring)
    inline = MasterKeyring.from_env_or_file({MASTER_KEY_ENV: f"k2:{B64_B},k1:{B64_A}"})
    assert WorkspaceKeys.unwrap(stored, inline).key_ids == (1,)


def test_loads_from_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MASTER_KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(MASTER_KEY_ENV, f"k1:{B64_A}")
    assert MasterKeyring.from_env_or_file().key_ids == ("k1",)


@pytest.mark.parametrize(
    ("env", "message", "location"),
    [
        pytest.param({}, "no master key: set GRISTMILL_MASTER_KEY", MASTER_KEY_ENV, id="unset"),
        pytest.param({MASTER_KEY_ENV: "  "}, "no master key", MASTER_KEY_ENV, id="blank"),
        pytest.param(
            {MASTER_KEY_ENV: B64_A, MASTER_KEY_FILE_ENV: "/etc/gm.key"},
            "set only one of",
            MASTER_KEY_ENV,
            id="both",
        ),
        pytest.param(
            {MASTER_KEY_ENV: "not_base64!!"},
            "master key 'default' is not valid base64",
            f"{MASTER_KEY_ENV} entry 1",
            id="bad-base64",
        ),
        pytest.param(
            {MASTER_KEY_ENV: B64_A[:-1]},
            "master key 'default' is not valid base64",
            f"{MASTER_KEY_ENV} entry 1",
            id="bad-padding",
        ),
        pytest.param(
            {MASTER_KEY_ENV: base64.urlsafe_b64encode(b"\xff" * 32).decode()},
            "is not valid base64",
            f"{MASTER_KEY_ENV} entry 1",
            id="urlsafe-alphabet",
        ),
        pytest.param(
            {MASTER_KEY_ENV: B64_SHORT},
            "master key 'default' must decode to 32 bytes, got 16",
            f"{MASTER_KEY_ENV} entry 1",
            id="too-short",
        ),
        pytest.param(
            {MASTER_KEY_ENV: f"k2:{B64_B},k1:{B64_LONG}"},
            "master key 'k1' must decode to 32 bytes, got 33",
            f"{MASTER_KEY_ENV} entry 2",
            id="second-too-long",
        ),
        pytest.param(
            {MASTER_KEY_ENV: f"k1:{B64_B},{B64_A}"},
            "every entry needs an id",
            f"{MASTER_KEY_ENV} entry 2",
            id="bare-among-several",
        ),
        pytest.param(
            {MASTER_KEY_ENV: f"bad/id:{B64_A}"},
            "the master key id is invalid",
            f"{MASTER_KEY_ENV} entry 1",
            id="bad-id",
        ),
        pytest.param(
            {MASTER_KEY_ENV: f":{B64_A}"},
            "the master key id is invalid",
            f"{MASTER_KEY_ENV} entry 1",
            id="empty-id",
        ),
        pytest.param(
            {MASTER_KEY_ENV: f"k1:{B64_A},k1:{B64_B}"},
            "master key id 'k1' appears twice",
            MASTER_KEY_ENV,
            id="duplicate-id",
        ),
    ],
)
def test_bad_configuration_is_reported_clearly(
    env: dict[str, str], message: str, location: str
) -> None:
    with pytest.raises(InvalidRequest, match=message) as info:
        MasterKeyring.from_env_or_file(env)
    assert info.value.location == location
    for secret in (B64_A, B64_B, B64_SHORT, B64_LONG, "not_base64!!"):
        assert secret not in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(None, "cannot read the master key file .*No such file", id="missing"),
        pytest.param("# only a comment\n\n", "holds no master key", id="empty"),
        pytest.param(b"\xff\xfe\x00", "cannot read the master key file", id="not-utf8"),
        pytest.param(f"{B64_SHORT}\n", "must decode to 32 bytes, got 16", id="too-short"),
    ],
)
def test_bad_key_file_is_reported_clearly(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / "master.keys"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(InvalidRequest, match=message) as info:
        MasterKeyring.from_env_or_file({MASTER_KEY_FILE_ENV: str(path)})
    assert info.value.location is not None
    assert B64_SHORT not in str(info.value)


def test_generated_keys_are_random_and_loadable() -> None:
    first, second = MasterKeyring.generate_key(), MasterKeyring.generate_key()
    assert len(first) == len(second) == 32
    assert first != second
    value = base64.b64encode(first).decode()
    assert MasterKeyring.from_env_or_file({MASTER_KEY_ENV: value}).active_id == "default"


def test_direct_construction_checks_keys() -> None:
    with pytest.raises(InvalidRequest, match="needs at least one key"):
        MasterKeyring([])
    with pytest.raises(InvalidRequest, match="master key 'k1' must be 32 bytes, got 31"):
        MasterKeyring([("k1", bytes(31))])


def test_reprs_and_errors_do_not_leak_keys() -> None:
    keyring = MasterKeyring([("k2", KEY_B), ("k1", KEY_A)])
    data_key = os.urandom(32)
    keys = WorkspaceKeys(workspace="main", active_key_id=1, keys={1: data_key}).new_data_key()
    text = encrypt_secret(keys, "u/alice/token", "hunter2")
    shown = [repr(keyring), str(keyring), repr(keys), str(keys)]
    assert shown[0] == "MasterKeyring(active_id='k2', key_ids=['k2', 'k1'])"
    assert shown[2] == "WorkspaceKeys(workspace='main', active_key_id=2, key_ids=[1, 2])"
    for text_form in shown:
        for key in (KEY_A, KEY_B, data_key):
            assert repr(key) not in text_form
            assert base64.b64encode(key).decode() not in text_form
            assert key.hex() not in text_form
    assert "hunter2" not in text
    # Key holders are not structs: they cannot be serialized by accident.
    for holder in (keyring, keys):
        with pytest.raises(TypeError):
            msgspec.json.encode(holder)
