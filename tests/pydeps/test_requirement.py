"""``check_requirement``: only plain PEP 508 requirements reach the resolver."""

from __future__ import annotations

import pytest

from gristmill.common.pydeps import (
    DependencyError,
    check_requirement,
    distribution_for,
    normalize_name,
    requirement_name,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("six", "six"),
        ("  six  ", "six"),
        ("six==1.16.0", "six==1.16.0"),
        ("requests >= 2, < 3", "requests >= 2, < 3"),
        ("requests[socks,security]~=2.31", "requests[socks,security]~=2.31"),
        ("zope.interface", "zope.interface"),
        ("Django (>=4.2)", "Django (>=4.2)"),
        ('tomli; python_version < "3.11"', 'tomli; python_version < "3.11"'),
        ("six==1.16.0  # the last one for Python 2", "six==1.16.0"),
        ("pkg @ https://example.com/pkg-1.0-py3-none-any.whl", None),
        ("pkg @ git+https://github.com/o/pkg@v1", None),
    ],
)
def test_accepted(text: str, expected: str | None) -> None:
    assert check_requirement(text) == (expected or text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   # only a comment",
        "-r /etc/passwd",
        "--index-url https://evil.example/simple",
        "-e .",
        "six --hash=sha256:0000",
        "./local",
        "/abs/path",
        "~/pkg",
        "https://example.com/pkg.whl",
        "pkg @ file:///etc/passwd",
        "pkg @ git+ssh://git@example.com/pkg",
        "pkg @ /local/path",
        "six\n-r x",
        "six==1.0 extra words",
        "-six",
    ],
)
def test_rejected(text: str) -> None:
    with pytest.raises(DependencyError):
        check_requirement(text)


def test_names() -> None:
    assert normalize_name("PyYAML") == normalize_name("pyyaml") == "pyyaml"
    assert normalize_name("zope.interface") == normalize_name("zope_interface") == "zope-interface"
    assert requirement_name("Typing_Extensions[x]>=4") == "typing-extensions"
    assert distribution_for("os.path") is None
    assert distribution_for("google") is None
    assert distribution_for("google.cloud.storage.blob") == "google-cloud-storage"
