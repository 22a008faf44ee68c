"""The use cases (identity resolution, token issuance, verification, event decisions), the token cache and the observer port.

Knows the domain and nothing of the transports, metrics or processes.
"""
