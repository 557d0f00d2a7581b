"""``python -m connector`` is the ``klantsync`` command."""

from connector.cli import main

raise SystemExit(main())
