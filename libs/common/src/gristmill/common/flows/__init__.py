"""Flows: the OpenFlow model, JavaScript expressions, validation, the saved-flow store,
and the engine that advances a flow in the transaction that ended its step.

Modules: ``model`` (the format), ``expressions`` (QuickJS), ``validate`` (checks at save
time), ``store`` (saved flows), ``status`` (the stored progress of a flow job),
``engine`` (starting and advancing flows; the queue's child-finished hook), ``jobs``
(the job of a flow run request), ``view`` (``flow_status`` and user states for the API).
"""
