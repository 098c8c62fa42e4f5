"""The ``gristmill`` command: the composition root that wires services together."""
