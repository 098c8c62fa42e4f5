"""Binding a worker to scripts: settings, the command line, the jobs' tags."""

from __future__ import annotations

import pytest

from gristmill.cli import main as cli
from gristmill.cli.serve_worker import dedicated_settings, worker_settings
from gristmill.common.errors import InvalidRequest
from gristmill.common.queue import validate_tag
from gristmill.common.settings import load_settings


def test_gristmill_dedicated_names_scripts_as_their_tags() -> None:
    settings = load_settings(
        {"GRISTMILL_DEDICATED": "main:f/hot/echo, main:/u/alice/fast ,main:f/hot/echo"}
    )
    dedicated = dedicated_settings(settings)
    assert dedicated is not None
    assert dedicated.scripts == ("main:f/hot/echo", "main:u/alice/fast")
    worker = worker_settings(settings, dedicated=dedicated)
    assert worker.tags == ("main:f/hot/echo", "main:u/alice/fast")  # only these
    assert worker.dedicated == dedicated
    ordinary = worker_settings(settings)
    assert "python3" in ordinary.tags
    assert ordinary.dedicated is None


def test_the_limits_of_warm_interpreters_come_from_settings() -> None:
    settings = load_settings(
        {
            "GRISTMILL_DEDICATED": "main:f/hot/echo",
            "GRISTMILL_DEDICATED_MAX_JOBS": "50",
            "GRISTMILL_DEDICATED_MAX_RSS_MB": "64",
        }
    )
    dedicated = dedicated_settings(settings)
    assert dedicated is not None
    assert (dedicated.max_jobs, dedicated.max_rss_mb) == (50, 64)


def test_no_dedicated_scripts_means_an_ordinary_worker() -> None:
    assert dedicated_settings(load_settings({})) is None


@pytest.mark.parametrize("value", ["f/hot/echo", "main:", ":f/hot/echo", "main:not a path"])
def test_a_bad_dedicated_script_names_the_setting(value: str) -> None:
    settings = load_settings({"GRISTMILL_DEDICATED": value})
    with pytest.raises(InvalidRequest) as raised:
        dedicated_settings(settings)
    assert raised.value.location == "GRISTMILL_DEDICATED"
    assert value.strip() in raised.value.message


def test_the_worker_command_takes_dedicated_scripts() -> None:
    args = cli._parser().parse_args(
        ["worker", "--dedicated", "main:f/hot/echo", "--dedicated", "main:u/alice/fast"]
    )
    assert args.dedicated == ["main:f/hot/echo", "main:u/alice/fast"]
    settings = load_settings({}, dedicated=args.dedicated)
    assert settings.dedicated == ("main:f/hot/echo", "main:u/alice/fast")


def test_a_script_path_fits_in_a_tag() -> None:
    longest = "main:f/" + "a" * 120 + "/" + "b" * 120
    assert validate_tag(longest) == longest
    with pytest.raises(InvalidRequest):
        validate_tag("main:f/has space")
