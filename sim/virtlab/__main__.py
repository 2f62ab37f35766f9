"""``python -m virtlab`` runs the command-line interface.

The signal handlers go in before anything else is imported, so that a Ctrl-C while the
scientific libraries load stops quietly (exit 130) instead of printing a traceback.
"""

import sys

try:
    from virtlab.cli import install_signal_handlers

    install_signal_handlers()
    from virtlab.cli import main
except KeyboardInterrupt:  # the signal came before the handlers were in place
    sys.exit(130)

raise SystemExit(main())
