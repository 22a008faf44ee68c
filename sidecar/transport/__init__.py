"""The wire: the gRPC servicer, the server runtime, call admission, the fast call path and the CLI's own client.

The only layer that imports grpc.
"""
