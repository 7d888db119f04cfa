"""`make ui`: `dg dev` (the UI and the daemon over the project's instance), stopped whole by Ctrl-C or SIGTERM.

`dg dev` alone ignores SIGTERM, and once its children are killed it leaves a `dagster api grpc` behind. Here it
runs in a process group of its own: SIGINT or SIGTERM asks it to stop as Ctrl-C does, waits for it, then ends
whatever of the group is left, so that no process outlives `make ui`.

    python -m activity_pipeline.ui --port 3000
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

# How long dg dev gets to stop by itself (its webserver, daemon and code servers) before the rest is killed.
GRACE_SECONDS = 20.0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(proc: subprocess.Popen, pgid: int, grace: float = GRACE_SECONDS) -> None:
    """Ask the group to stop as Ctrl-C does, wait up to `grace` seconds, then kill what is left of it."""
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGINT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (proc.poll() is None or _group_alive(pgid)):
        time.sleep(0.2)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m activity_pipeline.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000)
    # Loopback unless told otherwise: the UI has no login of its own, and whoever reaches it can launch runs.
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    dg = Path(sys.executable).with_name("dg")
    if args.host in ("127.0.0.1", "localhost", "::1"):
        print(f"the UI listens on {args.host}:{args.port} only (this machine); it has no login of its own: see "
              "docs/deployment.md before UI_HOST=0.0.0.0", flush=True)  # fmt: skip
    else:
        print(f"the UI listens on {args.host}:{args.port}, WITHOUT A LOGIN: anyone who reaches it can launch runs "
              "and read run logs; put it behind an authenticating proxy (docs/deployment.md)", flush=True)  # fmt: skip
    # SIGINT at its default for dg dev even when this runs as a background job (which ignores it, and an ignored
    # signal is inherited): SIGINT is how it is asked to stop.
    proc = subprocess.Popen(
        [str(dg), "dev", "--host", args.host, "--port", str(args.port)],
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    received: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        # Only noted here: the main loop stops the group (waiting on the child inside a handler that interrupted
        # a wait on it would deadlock on Popen's lock).
        received.append(signum)

    signal.signal(signal.SIGTERM, note)
    signal.signal(signal.SIGINT, note)
    while proc.poll() is None and not received:
        time.sleep(0.2)
    if received:
        print(f"\nmake ui: stopping dg dev ({signal.Signals(received[0]).name})", file=sys.stderr, flush=True)
        stop_group(proc, proc.pid)
        return 0
    stop_group(proc, proc.pid, grace=5.0)  # dg dev ended by itself: its children go with it
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
