"""``python -m worker.dev.bench BENCHMARK ...`` (the same as ``voice-worker bench``) and
``python -m worker.dev.bench providers ...`` (the fixed-delay provider process)."""

import sys

from worker.dev.bench import main

if __name__ == "__main__":
    sys.exit(main())
