"""``erftools dashboard``: start the Streamlit dashboard on result folders (loopback only by default)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "dashboard", help="explore ERF maps and shape-bias results in the browser (Streamlit)",
        description="Start the erftools dashboard (Streamlit) on the runs below a results folder. It only reads "
                    "what `erftools erf` and `erftools shape-bias` wrote: it never runs a model or downloads. "
                    "Without --results it opens on the example results committed in reports/examples.")
    p.add_argument("--results", metavar="DIR", default=None,
                   help="folder holding run folders (default: the example results in reports/examples)")
    p.add_argument("--port", type=int, default=8501, help="port to listen on (default: %(default)s)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 exposes the "
                        "results to your network)")
    p.add_argument("--stimuli", metavar="DIR", default=None,
                   help="the cue-conflict stimuli folder for the image browser (default: the `erftools data "
                        "fetch` cache when present). A folder named inside a result file is never opened: images "
                        "are read only from this folder")
    p.add_argument("--print-command", action="store_true", help="print the streamlit command and exit")
    p.set_defaults(func=run)


def streamlit_command(port: int, address: str) -> list[str]:
    script = Path(__file__).resolve().parents[1] / "dashboard" / "_script" / "run_dashboard.py"
    return [sys.executable, "-m", "streamlit", "run", str(script),
            "--server.address", address, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--global.developmentMode", "false", "--client.toolbarMode", "minimal"]


def run(args) -> int:
    from .._io import ErftoolsError
    from ..dashboard import ENV_RESULTS, ENV_STIMULI
    from ..results import results_root

    if not 0 <= args.port <= 65535:
        raise ErftoolsError(f"--port {args.port} is not a port number (0-65535)")
    root = results_root(args.results)  # raises a clear error when missing
    env = dict(os.environ, **{ENV_RESULTS: str(root)})
    if args.stimuli:
        stimuli = Path(args.stimuli).expanduser().resolve()
        if not stimuli.is_dir():
            raise ErftoolsError(f"--stimuli {stimuli} is not a folder")
        env[ENV_STIMULI] = str(stimuli)
    cmd = streamlit_command(args.port, args.address)
    if args.print_command:
        print(" ".join(cmd))
        return 0
    print(f"erftools dashboard on http://{args.address}:{args.port} (results: {root}); Ctrl+C stops it",
          file=sys.stderr, flush=True)
    if os.name == "posix":  # become the server: signals (Ctrl+C, SIGTERM from a supervisor) reach it directly
        os.execve(sys.executable, cmd, env)
    try:  # pragma: no cover - Windows
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:  # pragma: no cover
        return 0
