"""Prometheus metrics (the only importer of prometheus_client besides the CLI), the audit log and the RPC metric series.
"""
