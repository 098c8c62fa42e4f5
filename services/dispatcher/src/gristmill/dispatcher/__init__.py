"""The dispatcher: run requests from the bus into the Postgres queue; queue upkeep."""

from gristmill.dispatcher.service import Dispatcher

__all__ = ["Dispatcher"]
