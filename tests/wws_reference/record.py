"""Record wws 1.7.0's answers to the reference requests into answers.json.

    .venv/bin/python tests/wws_reference/record.py [--wws PATH] [--out PATH]

Needs a real wws 1.7.0 binary whose wasi-nn works on the installed OpenVINO (build it with
`WWS_WASI_NN=1 bench/wws/build.sh`; default ~/.cache/wasminfer/wws/1.7.0/bin/wws-nn, or WWS_BIN). Builds app/ into a temporary folder, serves it
with `wws FOLDER --host 127.0.0.1 --port <free port>`, sends cases.CASES in order and writes
the normalized answers (see cases.py for the normalizations). CI never runs this: the test
replays the recorded file.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the package below

from wws_reference.cases import ANSWERS, CASES, NORMALIZED, SERVER_ENV, WWS_BIN, build_site, normalize, send  # noqa: E402

RECORD_COMMAND = "python tests/wws_reference/record.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"wws exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"wws did not listen on {port} within {timeout} s:\n{log.read_text(errors='replace')}")


def version(wws: Path) -> str:
    return subprocess.run([str(wws), "--version"], capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wws", type=Path, default=WWS_BIN, help="the wws 1.7.0 binary")
    parser.add_argument("--out", type=Path, default=ANSWERS)
    args = parser.parse_args(argv)
    if not args.wws.is_file():
        raise SystemExit(f"no wws binary at {args.wws}: build it with bench/wws/build.sh (see bench/README.md)")
    ver = version(args.wws)
    if ver.split()[-1] != "1.7.0":
        raise SystemExit(f"{args.wws} is {ver!r}; the reference is wws 1.7.0")

    # No "." in the folder names: wws 1.7.0 strips a served folder's "extension" from its routes.
    with tempfile.TemporaryDirectory(prefix="wws-reference-") as tmp:
        site = build_site(Path(tmp))
        port = free_port()
        log = Path(tmp) / "wws.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [str(args.wws), str(site), "--host", "127.0.0.1", "--port", str(port)],
                cwd=tmp, env={**os.environ, **SERVER_ENV}, stdout=sink, stderr=subprocess.STDOUT,
            )
            try:
                wait_listening(proc, port, log)
                answers = {case.name: normalize(send(port, case), port) for case in CASES}
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        print(log.read_text(errors="replace"), file=sys.stderr)

    doc = {
        "recorded_with": f"{ver} ({RECORD_COMMAND})",
        "normalized": NORMALIZED,
        "answers": answers,
    }
    args.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(answers)} answers to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
