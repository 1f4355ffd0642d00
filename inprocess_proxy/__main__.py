"""``python -m inprocess_proxy``: the ``inprocess-proxy`` command (see ``standalone``)."""

import sys

from .standalone.main import main

if __name__ == "__main__":
    sys.exit(main())
