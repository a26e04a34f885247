"""``python -m agent`` is ``hatang-agent``."""

from agent.cli import main

raise SystemExit(main())
