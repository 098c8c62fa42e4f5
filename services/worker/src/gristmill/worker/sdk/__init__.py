"""The in-job client library, put on every Python job's import path as ``gristmill``.

The module itself (``gristmill.py`` in this folder) uses only the standard library, so
it costs nothing to import and needs no installation.
"""

from pathlib import Path

__all__ = ["SDK_DIR"]

#: Folder to add to a job's ``sys.path`` so that ``import gristmill`` finds the client.
SDK_DIR = Path(__file__).resolve().parent / "site"
