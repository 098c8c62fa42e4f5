"""Which distribution provides an imported module.

Most distributions are installed under their own name (``import requests`` needs
``requests``). The exceptions that scripts meet most often are listed in
:data:`IMPORT_TO_DISTRIBUTION`; the longest dotted prefix of an import that the table
knows wins, so ``google.cloud.storage`` beats a shorter rule for ``google``.

Namespace packages (``google``, ``azure``, ``zope``, ...) are shared by many
distributions, each named after the first two or three components of its modules:
``google.cloud.bigquery`` is ``google-cloud-bigquery`` and ``azure.identity.aio`` is
``azure-identity``. An import of the bare namespace (``import google``) names no
distribution and is skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = ["IMPORT_TO_DISTRIBUTION", "NAMESPACE_DEPTHS", "distribution_for"]

#: Import name (a top-level module or a dotted prefix) → distribution on PyPI.
IMPORT_TO_DISTRIBUTION: Final[Mapping[str, str]] = MappingProxyType(
    {
        "attr": "attrs",
        "azure.storage.blob": "azure-storage-blob",
        "bs4": "beautifulsoup4",
        "Crypto": "pycryptodome",
        "cv2": "opencv-python",
        "dateutil": "python-dateutil",
        "discord": "discord.py",
        "dns": "dnspython",
        "docx": "python-docx",
        "dotenv": "python-dotenv",
        "faiss": "faiss-cpu",
        "fitz": "PyMuPDF",
        "gi": "PyGObject",
        "git": "GitPython",
        "google.cloud.bigquery": "google-cloud-bigquery",
        "google.cloud.pubsub_v1": "google-cloud-pubsub",
        "google.cloud.secretmanager": "google-cloud-secret-manager",
        "google.cloud.storage": "google-cloud-storage",
        "google.oauth2": "google-auth",
        "google.protobuf": "protobuf",
        "googleapiclient": "google-api-python-client",
        "jose": "python-jose",
        "jwt": "PyJWT",
        "kafka": "kafka-python",
        "ldap": "python-ldap",
        "magic": "python-magic",
        "MySQLdb": "mysqlclient",
        "mysql.connector": "mysql-connector-python",
        "mpl_toolkits": "matplotlib",
        "multipart": "python-multipart",
        "nacl": "PyNaCl",
        "OpenSSL": "pyOpenSSL",
        "PIL": "Pillow",
        "pkg_resources": "setuptools",
        "pptx": "python-pptx",
        "psycopg2": "psycopg2-binary",
        "serial": "pyserial",
        "skimage": "scikit-image",
        "sklearn": "scikit-learn",
        "slugify": "python-slugify",
        "snowflake.connector": "snowflake-connector-python",
        "socks": "PySocks",
        "telegram": "python-telegram-bot",
        "usb": "pyusb",
        "websocket": "websocket-client",
        "wmill": "wmill",
        "yaml": "PyYAML",
        "zmq": "pyzmq",
    }
)

#: Namespace prefix → how many leading components name the distribution.
NAMESPACE_DEPTHS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "azure": 2,
        "azure.ai": 3,
        "azure.data": 3,
        "azure.keyvault": 3,
        "azure.mgmt": 3,
        "azure.monitor": 3,
        "azure.storage": 3,
        "backports": 2,
        "google": 2,
        "google.cloud": 3,
        "jaraco": 2,
        "ruamel": 2,
        "sphinxcontrib": 2,
        "zope": 2,
    }
)

_STDLIB: Final = frozenset(sys.stdlib_module_names)


def distribution_for(module: str) -> str | None:
    """The distribution to install for ``import module``, or ``None`` for the standard
    library and for a bare namespace package.

    ``module`` is an absolute dotted name; for ``from a.b import c`` pass ``a.b.c``,
    so that ``from google.cloud import storage`` finds ``google-cloud-storage``.
    """
    parts = module.split(".")
    if parts[0] in _STDLIB:
        return None
    for end in range(len(parts), 0, -1):
        known = IMPORT_TO_DISTRIBUTION.get(".".join(parts[:end]))
        if known is not None:
            return known
    for end in range(len(parts), 0, -1):
        depth = NAMESPACE_DEPTHS.get(".".join(parts[:end]))
        if depth is not None:
            return "-".join(parts[:depth]) if len(parts) >= depth else None
    return parts[0]
