"""The ``sidecar`` command: settings from flags and environment, and the composition root that wires every layer.
"""
