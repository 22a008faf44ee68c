"""Process and key lifecycle: key rotation, key-file safety, pre-fork supervision, CPU scheduling.

Plain values in, never the CLI's configuration object.
"""
