"""What one token cache entry really costs: Python allocations (tracemalloc) and RSS per entry.

It signs ``--entries`` tokens for distinct emails of ``--email-length`` characters
(each with its own UUID string, as calls bring them) into a cache that holds them
all, and prints the bytes per entry that tracemalloc sees, the process's RSS
growth per entry, and what :func:`sidecar.service.cache.entry_cost` counts.

    python bench/cachecost.py --email-length 34
    python bench/cachecost.py --email-length 254 --entries 50000
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
import uuid

from sidecar.domain import keys
from sidecar.domain.keys import KeyHolder
from sidecar.service.cache import TokenCache, entry_cost
from sidecar.service.usecases import Sidecar


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--email-length", type=int, default=34)
    ap.add_argument("--trace", action="store_true", help="also count Python allocations (slower)")
    args = ap.parse_args()
    cache = TokenCache(max_entries=args.entries * 2, max_bytes=1 << 40)
    sidecar = Sidecar(KeyHolder(keys.generate()), salt="bench", cache=cache)
    pad = "x" * max(1, args.email_length - len("u0000000.@example.com"))
    emails = [f"u{i:07d}.{pad}@example.com" for i in range(args.entries)]
    uuids = [str(uuid.uuid4()) for _ in range(args.entries)]
    gc.collect()
    if args.trace:
        tracemalloc.start()
    traced0, rss0 = tracemalloc.get_traced_memory()[0], rss_bytes()
    for email, uuid_ in zip(emails, uuids, strict=True):
        sidecar.issue_token(email, uuid_, None)
    gc.collect()
    traced1, rss1 = tracemalloc.get_traced_memory()[0], rss_bytes()
    n = len(cache)
    sample = next(iter(cache._young.items()))  # a diagnostic: one entry
    print(f"entries {n}, email {len(emails[0])} chars, jwt {len(sample[1].jwt)} chars")
    if args.trace:
        print(f"python allocations per entry: {(traced1 - traced0) / n:.0f} bytes")
    print(f"RSS growth per entry:         {(rss1 - rss0) / n:.0f} bytes")
    print(f"entry_cost counts:            {entry_cost(sample[0][0], sample[0][1], sample[1])} bytes")


if __name__ == "__main__":
    main()
