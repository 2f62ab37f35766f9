"""``python -m virtlab`` runs the command-line interface.

The signal handlers go in before anything else is imported, so that a Ctrl-C while the
scientific libraries load stops quietly (exit 130) instead of printing a traceback.
"""

import sys

try:
    from virtlab.cli import install_signal_handlers

    install_signal_handlers()
    from virtlab.cli import main
except KeyboardInterrupt as stop:  # a signal while the command line itself loads
    print(f"virtlab: interrupted by {str(stop) or 'SIGINT'}; stopped", file=sys.stderr)
    sys.exit(128 + int(getattr(stop, "signum", 2)))

raise SystemExit(main())
