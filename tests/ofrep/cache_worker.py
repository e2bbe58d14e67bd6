"""One process of the shared-cache test: writes its own entries to the store and reads
whatever is there, for ``--seconds``; prints ``{"writes", "reads", "bad"}`` as JSON.

``bad`` counts reads that were neither missing nor a whole entry written by some
process (a torn or mixed file would show up here).

    python -m tests.ofrep.cache_worker DIR NAME --seconds 1 --tag w1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from flageval.ofrep._persist import Entry, Store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("name")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--tag", default="w")
    args = parser.parse_args()
    store = Store(Path(args.directory), args.name)
    writes = reads = bad = 0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        # Sizes vary (1 to 2,000 flags) so a torn write could not pass for a whole one.
        n = 1 + (writes * 397) % 2000
        flags = [{"key": f"{args.tag}-{i}", "value": i} for i in range(n)]
        entry = Entry("identity", args.tag, f"{n}", None, time.time(), {"flags": flags}, False)
        store.write(store.encode(entry))
        writes += 1
        try:
            got = store.read()
        except ValueError:
            bad += 1
            continue
        reads += 1
        if got is not None and len(got.payload["flags"]) != int(got.context_hash):
            bad += 1
    print(json.dumps({"writes": writes, "reads": reads, "bad": bad}), flush=True)


if __name__ == "__main__":
    main()
