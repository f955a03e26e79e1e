"""``python -m chclip_convert`` runs the command-line converter."""

import sys

from .cli import main

sys.exit(main())
