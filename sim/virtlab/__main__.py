"""``python -m virtlab`` runs the command-line interface."""

from virtlab.cli import main

raise SystemExit(main())
