"""``python -m bench.serving``."""

from bench.serving.run import main

raise SystemExit(main())
