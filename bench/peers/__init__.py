"""The peers Gristmill is measured against: their environment, services and drivers.

Peers live in their own virtual environment (``bench/.peers-venv``, pinned by
``requirements.txt``); Gristmill's environment never imports them. Each peer has a
driver script under ``drivers/`` that the harness runs with the peers' interpreter,
one sample per run, and that answers in JSON.
"""
