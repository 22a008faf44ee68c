"""Synerise's rules: identity, cookies, input validation, keys, tokens, verification, the event policy.

Standard library, cryptography and PyJWT only: nothing here knows about gRPC, Prometheus or processes.
"""
