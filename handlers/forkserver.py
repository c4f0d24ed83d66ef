"""The fork server of ``caremsg serve --workers`` ignores SIGTERM and SIGHUP; imported there alone.

The parent preloads this module into the fork server (handlers/workers.py) and nothing else
imports it: importing it is what it does. A stop signal sent to the whole process group, as
systemd sends SIGTERM to every process of a unit by default, used to end the fork server along
with everything else. Each worker's exit status reaches the parent through the fork server, so
the parent then read every worker's as 255 (multiprocessing's "unknown"), logged
``serve.worker_stop_failed`` for workers that had in fact stopped cleanly, and exited 1: every
ordinary stop looked like a failure. The fork server needs no signal to stop: it exits when the
parent's end of its pipe closes, i.e. when the parent exits. Workers are forked from it with these
signals ignored and put them back first thing (``run_worker``).
"""

from __future__ import annotations

import signal

#: The signals the fork server ignores, which a worker restores (to their defaults) first thing.
IGNORED = (signal.SIGTERM, signal.SIGHUP)

for _signum in IGNORED:
    signal.signal(_signum, signal.SIG_IGN)
