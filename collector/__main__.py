"""``python -m collector`` → the ``hatang-collector`` command line."""

import sys

from collector.cli import main

sys.exit(main())
