"""``python -m chclip_convert.provenance CHECKPOINT``: print the source weights digest a folder records.

Model cards in published folders name this module, so it keeps this name; the code lives in
:mod:`chclip_convert.conversion.provenance`.
"""

import sys

from chclip_convert.conversion.provenance import main, source_weights_digest

__all__ = ["main", "source_weights_digest"]

if __name__ == "__main__":
    sys.exit(main())
