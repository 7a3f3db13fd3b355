"""`python -m controller.sandbox.moto_process STARTER_PID [moto.server options]`: moto's server,
which stops by itself once the process that started it is gone.

Without this, a sandbox or a test session killed with SIGKILL would leave its emulator running,
holding its port, for good.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time


def _exit_when_orphaned(starter: int) -> None:
    while os.getppid() == starter:
        time.sleep(1)
    os._exit(0)


def main() -> None:
    starter = int(sys.argv[1])
    threading.Thread(target=_exit_when_orphaned, args=(starter,), daemon=True).start()
    sys.argv = ["moto.server", *sys.argv[2:]]
    runpy.run_module("moto.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
