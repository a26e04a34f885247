"""``python -m agent.discovery``: one discovery in a process of its own (the daemon's child).

Reads the request (``agent.discovery.child_request``) from standard input and writes the
``LanHosts`` as JSON to standard output; warnings go to standard error, which the daemon
logs. Exit 2 for a request it cannot read.
"""

from __future__ import annotations

import sys

from agent.discovery import child_main
from agent.subproc import child_process_main

if __name__ == "__main__":
    sys.exit(child_process_main(child_main))
