"""Generated protobuf and gRPC stubs for sidecar.v1 (``make proto``); do not edit."""
