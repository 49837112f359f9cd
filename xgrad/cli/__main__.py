"""``python -m xgrad.cli``, the same as ``xgrad``."""

from xgrad.cli import main

raise SystemExit(main())
