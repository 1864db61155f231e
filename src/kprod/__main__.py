"""``python -m kprod``: the same as the ``kprod`` command."""

from kprod.cli.main import main

raise SystemExit(main())
