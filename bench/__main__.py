"""``python -m bench``: run the benchmark suite (``--quick`` for a short run; ``--help``)."""

from bench.run import main

raise SystemExit(main())
