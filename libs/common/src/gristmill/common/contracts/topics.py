"""Bus topic names. They are part of the contract: renaming one is a breaking change."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Topic"]


class Topic(StrEnum):
    #: Run requests from every ingress (gateway, triggers, scheduler) to the dispatcher.
    #: Message type: :class:`gristmill.common.contracts.runs.RunRequest`. Key: job id.
    RUN_REQUESTS = "gristmill.run-requests"
