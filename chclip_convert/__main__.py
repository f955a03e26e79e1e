"""``python -m chclip_convert`` runs the command-line converter."""

import sys

try:
    from chclip_convert.cli.main import main
except KeyboardInterrupt:  # Ctrl-C while the command line itself loads: nothing was started
    sys.exit(130)

sys.exit(main())
