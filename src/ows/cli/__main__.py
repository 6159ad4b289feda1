"""``python -m ows.cli`` runs the ``ows`` command."""

import sys

from . import main

sys.exit(main())
