"""Identity and token sidecar for Synerise JS SDK customer authentication.

The domain modules (:mod:`sidecar.identity`, :mod:`sidecar.cookies`,
:mod:`sidecar.validation`, :mod:`sidecar.keys`, :mod:`sidecar.tokens`,
:mod:`sidecar.core`) never import grpc; :mod:`sidecar.server` translates between
them and the wire, and :mod:`sidecar.cli` is the command line.
"""

__version__ = "0.1.0"
