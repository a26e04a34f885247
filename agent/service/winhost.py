"""Started by the Windows service control manager with the base ``python.exe``.

Run as a script (not ``-m``), so it first makes the venv importable: it drops its own
folder from ``sys.path`` (it would shadow modules) and adds the venv's site-packages
with ``site.addsitedir``, which also runs pywin32's ``.pth`` bootstrap (its DLLs).
"""

import os
import site
import sys

if __name__ == "__main__":
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    site.addsitedir(os.path.dirname(os.path.dirname(_here)))
    from agent.service.winservice import main

    sys.exit(main(sys.argv[1:]))
