"""``infer_requirements``: imports, comments and PEP 723 metadata → requirements."""

from __future__ import annotations

import sys
import textwrap

import pytest

from gristmill.common.pydeps import (
    IMPORT_TO_DISTRIBUTION,
    DependencyError,
    Requirements,
    infer_requirements,
    infer_requirements_async,
)


def distributions(code: str) -> tuple[str, ...]:
    return infer_requirements(textwrap.dedent(code)).distributions


@pytest.mark.parametrize(("module", "distribution"), sorted(IMPORT_TO_DISTRIBUTION.items()))
def test_every_mapping(module: str, distribution: str) -> None:
    assert distributions(f"import {module}\n") == (distribution,)
    assert distributions(f"import {module}.sub as alias\n") == (distribution,)
    assert distributions(f"from {module} import something\n") == (distribution,)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import requests", ("requests",)),
        ("import requests.adapters", ("requests",)),
        ("from requests.adapters import HTTPAdapter", ("requests",)),
        ("import numpy as np, pandas as pd", ("numpy", "pandas")),
        ("from typing_extensions import Self", ("typing_extensions",)),
        ("from yaml import *", ("PyYAML",)),
        ("from PIL import Image", ("Pillow",)),
        ("import sklearn.linear_model", ("scikit-learn",)),
        # Namespace packages: the distribution is named after 2 or 3 components.
        (
            "from google.cloud import storage, bigquery",
            ("google-cloud-bigquery", "google-cloud-storage"),
        ),
        ("from google.cloud.storage import Client", ("google-cloud-storage",)),
        ("import google.cloud.firestore", ("google-cloud-firestore",)),
        ("from google.cloud import pubsub_v1", ("google-cloud-pubsub",)),
        ("from google import genai", ("google-genai",)),
        ("import google.auth", ("google-auth",)),
        ("from google.oauth2 import service_account", ("google-auth",)),
        ("from google.protobuf import json_format", ("protobuf",)),
        ("import google", ()),
        ("import google.cloud", ()),
        ("from azure.identity.aio import DefaultAzureCredential", ("azure-identity",)),
        ("from azure.keyvault.secrets import SecretClient", ("azure-keyvault-secrets",)),
        ("from azure.storage.blob import BlobClient", ("azure-storage-blob",)),
        ("import azure.mgmt.compute", ("azure-mgmt-compute",)),
        ("import ruamel.yaml", ("ruamel-yaml",)),
        ("from zope.interface import implementer", ("zope-interface",)),
        ("import backports.zoneinfo", ("backports-zoneinfo",)),
        ("from mysql import connector", ("mysql-connector-python",)),
        # One entry per distribution, sorted by normalized name.
        ("import yaml\nfrom yaml import safe_load\nimport attr", ("attrs", "PyYAML")),
    ],
)
def test_imports(code: str, expected: tuple[str, ...]) -> None:
    assert distributions(code) == expected


@pytest.mark.parametrize(
    "code",
    [
        "import os, sys, json",
        "import collections.abc",
        "from __future__ import annotations",
        "import urllib.request",
        "from xml.etree import ElementTree",
        "import tomllib, zoneinfo, asyncio",
        "from concurrent.futures import ThreadPoolExecutor",
        "import _thread",
    ],
)
def test_standard_library_is_excluded(code: str) -> None:
    assert distributions(code) == ()


def test_no_standard_library_module_is_a_distribution() -> None:
    code = "".join(f"import {name}\n" for name in sorted(sys.stdlib_module_names))
    assert distributions(code) == ()


def test_nested_imports_count_except_under_type_checking() -> None:
    code = """
        import typing
        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            import pandas
        else:
            import httpx
        if typing.TYPE_CHECKING:
            from numpy import ndarray

        try:
            import ujson as json
        except ImportError:
            import json

        class Client:
            import attr

            def method(self):
                from bs4 import BeautifulSoup

        async def main():
            with open("x"):
                import aiohttp
            for _ in range(1):
                if True:
                    import requests
            match 1:
                case 1:
                    import dotenv
            return [__import__("ignored")]
    """
    assert distributions(code) == (
        "aiohttp",
        "attrs",
        "beautifulsoup4",
        "httpx",
        "python-dotenv",
        "requests",
        "ujson",
    )


# --- comments: pins, requirement blocks, PEP 723 ---------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import requests  # pin: requests==2.31.0", ("requests==2.31.0",)),
        ("import requests  # repin: requests==2.31.0", ("requests==2.31.0",)),
        ("import requests  #pin:requests>=2,<3", ("requests>=2,<3",)),
        ("import requests  # pin: requests[socks]==2.31.0", ("requests[socks]==2.31.0",)),
        # A pin naming another package swaps the statement's packages.
        (
            "import cv2  # pin: opencv-python-headless==4.9.0.80",
            ("opencv-python-headless==4.9.0.80",),
        ),
        # A pin naming one of the statement's packages leaves the others.
        ("import yaml, requests  # pin: requests<3", ("PyYAML", "requests<3")),
        ("from PIL import (\n    Image,  # pin: pillow==10.0.0\n)", ("pillow==10.0.0",)),
        # A pin elsewhere adds a requirement; a bare name gives way to a pinned one.
        ("import pandas\n# pin: numpy==1.26.4", ("numpy==1.26.4", "pandas")),
        ("import numpy\nx = 1  # pin: numpy>=1.26", ("numpy>=1.26",)),
        ("import numpy\n# pin: numpy>=1.26\n# pin: numpy<2", ("numpy>=1.26", "numpy<2")),
        # Only comments count, never strings.
        ('import six\nx = "# pin: six==1.0"', ("six",)),
    ],
)
def test_pins(code: str, expected: tuple[str, ...]) -> None:
    assert distributions(code) == expected


@pytest.mark.parametrize(
    ("code", "expected", "source"),
    [
        (
            """
            #requirements:
            #six==1.16.0
            #requests
            import yaml
            """,
            ("requests", "six==1.16.0"),
            "requirements",
        ),
        (
            """
            # Requirements: six
            # tomli>=2
            #
            # This comment is not part of the block.
            import yaml
            """,
            ("six", "tomli>=2"),
            "requirements",
        ),
        ("# requirements:\nimport yaml\n", (), "requirements"),
        (
            """
            # extra_requirements:
            # tqdm
            import yaml  # pin: PyYAML==6.0.1
            """,
            ("PyYAML==6.0.1", "tqdm"),
            "inferred",
        ),
        (
            '''
            """
            # requirements:
            # six
            """
            import yaml
            ''',
            ("PyYAML",),
            "inferred",
        ),
    ],
)
def test_requirement_blocks(code: str, expected: tuple[str, ...], source: str) -> None:
    requirements = infer_requirements(textwrap.dedent(code))
    assert requirements.distributions == expected
    assert requirements.source == source


def test_pep723_overrides_inference() -> None:
    code = """\
        # /// script
        # requires-python = ">=3.11"
        # dependencies = [
        #   "requests<3",
        #   "rich",
        # ]
        # [tool.uv]
        # exclude-newer = "2024-01-01T00:00:00Z"
        # ///
        import yaml
        import requests  # pin: requests==2.0.0
    """
    assert infer_requirements(textwrap.dedent(code)) == Requirements(
        distributions=("requests<3", "rich"), source="pep723", requires_python=">=3.11"
    )


@pytest.mark.parametrize(
    ("code", "expected", "source"),
    [
        ("# /// script\n# requires-python = '>=3.9'\n# ///\nimport yaml\n", (), "pep723"),
        ("# /// script\n# dependencies = []\n# ///\nimport yaml\n", (), "pep723"),
        # Another block type, or a malformed fence, is not script metadata.
        (
            "# /// pyproject\n# dependencies = ['six']\n# ///\nimport yaml\n",
            ("PyYAML",),
            "inferred",
        ),
        ("#/// script\n# dependencies = ['six']\n# ///\nimport yaml\n", ("PyYAML",), "inferred"),
    ],
)
def test_pep723_edges(code: str, expected: tuple[str, ...], source: str) -> None:
    requirements = infer_requirements(code)
    assert (requirements.distributions, requirements.source) == (expected, source)


@pytest.mark.parametrize(
    ("code", "message", "location"),
    [
        ("def main(:\n", "not valid Python", "line 1, column 10"),
        ("# /// script\n# dependencies = [\n# ///\n", "not valid TOML", "line 1"),
        ("import os\n# /// script\n# dependencies = 'six'\n# ///\n", "list of strings", "line 2"),
        ("# /// script\n# requires-python = 3\n# ///\n", "must be a string", "line 1"),
        (
            "# /// script\n# dependencies = []\n# ///\nimport os\n# /// script\n#\n# ///\n",
            "more than one `# /// script`",
            "line 5",
        ),
        (
            "# /// script\n# dependencies = ['six']\n# ///\n# requirements:\n# six\n",
            "declares its requirements twice",
            "line 4",
        ),
        ("# /// script\n# dependencies = ['-r /etc/passwd']\n# ///\n", "options are not", "line 1"),
        ("# requirements:\n# six\n# --index-url https://evil.example\n", "options", "line 3"),
        ("# requirements:\n# ./local/package\n", "not a valid requirement", "line 2"),
        ("import six  # pin: six @ file:///etc/passwd\n", "only https", "line 1"),
        ("x = 1\nimport six  # pin: -e .\n", "options are not", "line 2"),
    ],
)
def test_malformed_declarations(code: str, message: str, location: str) -> None:
    with pytest.raises(DependencyError, match=message) as caught:
        infer_requirements(code)
    assert caught.value.location == location
    assert caught.value.code == "dependency_error"


# --- workspace scripts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "path", "expected"),
    [
        ("from f.folder.other_script import x", None, ("f/folder/other_script",)),
        ("from u.user.x import y", None, ("u/user/x",)),
        ("import f.folder.script as s", None, ("f/folder/script",)),
        ("from f.folder.sub.script import x", None, ("f/folder/sub/script",)),
        ("from f.folder import a, b", None, ("f/folder/a", "f/folder/b")),
        ("import f.folder\nfrom f import folder", None, ()),
        ("from . import sibling", "f/folder/me", ("f/folder/sibling",)),
        ("from .sibling import x", "f/folder/me", ("f/folder/sibling",)),
        ("from ..other.script import x", "f/folder/me", ("f/other/script",)),
        ("from .sibling import x", None, ()),
        ("from ....too.far import x", "f/folder/me", ()),
    ],
)
def test_relative_imports(code: str, path: str | None, expected: tuple[str, ...]) -> None:
    requirements = infer_requirements(code, path=path)
    assert requirements.relative_imports == expected
    assert requirements.distributions == ()


SCRIPTS = {
    "f/app/root": "from f.app.b import x\nimport requests\n",
    "f/app/b": "from f.app.c import y  # a cycle: c imports b and root\nimport yaml\n",
    "f/app/c": (
        "from f.app.b import x\nfrom f.app.root import z\nfrom f.app import missing\nimport six\n"
    ),
}


def test_imported_scripts_are_followed_once_each() -> None:
    asked: list[str] = []

    def resolve(path: str) -> str | None:
        asked.append(path)
        return SCRIPTS.get(path)

    requirements = infer_requirements(SCRIPTS["f/app/root"], path="f/app/root", resolve=resolve)
    assert requirements == Requirements(
        distributions=("PyYAML", "requests", "six"),
        relative_imports=("f/app/b", "f/app/c", "f/app/missing"),
    )
    assert sorted(asked) == ["f/app/b", "f/app/c", "f/app/missing"]


def test_cycle_through_an_unnamed_root_ends() -> None:
    requirements = infer_requirements(SCRIPTS["f/app/root"], resolve=SCRIPTS.get)
    assert requirements.relative_imports == ("f/app/b", "f/app/c", "f/app/missing", "f/app/root")
    assert requirements.distributions == ("PyYAML", "requests", "six")


def test_without_a_resolver_imports_are_only_listed() -> None:
    requirements = infer_requirements(SCRIPTS["f/app/root"], path="f/app/root")
    assert requirements.relative_imports == ("f/app/b",)
    assert requirements.distributions == ("requests",)


async def test_async_resolver() -> None:
    async def resolve(path: str) -> str | None:
        return SCRIPTS.get(path)

    requirements = await infer_requirements_async(
        SCRIPTS["f/app/root"], path="f/app/root", resolve=resolve
    )
    assert requirements == infer_requirements(
        SCRIPTS["f/app/root"], path="f/app/root", resolve=SCRIPTS.get
    )


@pytest.mark.parametrize(
    ("root", "helper", "expected"),
    [
        # Pins from both are kept: the resolver must satisfy them together (or say not).
        ("import requests  # pin: requests==2.0.0", "import requests  # pin: requests==2.31.0",
         ("requests==2.0.0", "requests==2.31.0")),
        # A repin wins over every other requirement of that name.
        ("import requests  # repin: requests==2.0.0", "import requests  # pin: requests==2.31.0",
         ("requests==2.0.0",)),
        # A helper's PEP 723 block is its contribution.
        ("import yaml", "# /// script\n# dependencies = ['six==1.16.0']\n# ///\nimport tomli",
         ("PyYAML", "six==1.16.0")),
        # An explicit root ignores what helpers need (it is the whole answer).
        ("# requirements:\n# six", "import requests", ("six",)),
    ],
)  # fmt: skip
def test_requirements_across_scripts(root: str, helper: str, expected: tuple[str, ...]) -> None:
    scripts = {"f/x/helper": helper}
    code = f"{root}\nfrom f.x.helper import run\n"
    requirements = infer_requirements(code, path="f/x/main", resolve=scripts.get)
    assert requirements.distributions == expected
    assert requirements.relative_imports == ("f/x/helper",)


def test_an_error_in_an_imported_script_names_it() -> None:
    scripts = {"f/x/helper": "import os\nimport six  # pin: --pre six\n"}
    with pytest.raises(DependencyError) as caught:
        infer_requirements("from f.x.helper import y", resolve=scripts.get)
    assert caught.value.location == "f/x/helper: line 2"


def test_to_text() -> None:
    requirements = infer_requirements("import yaml\nimport six  # pin: six==1.16.0\n")
    assert requirements.to_text() == "PyYAML\nsix==1.16.0\n"
    assert Requirements().to_text() == ""
