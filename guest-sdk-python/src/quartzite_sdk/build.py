"""Builds a job module into a Quartzite component with componentize-py.

    python -m quartzite_sdk.build job.py -o job.wasm [--no-wasi-http]

The component is built against the WIT contract shipped in this package
(``quartzite:job@1.1.0``, world ``job``) plus the imports of ``config``
(``wasi:config/store``) and ``http`` (``wasi:http/outgoing-handler``): the
world ``job-http`` of ``wit/worlds.wit``. The host links both for every job and
lets a request out only as the job's grants say, so a job that uses neither
runs the same. ``--no-wasi-http`` builds against ``job-config`` instead, without
wasi:http: there ``quartzite_sdk.http`` raises ``Invalid``. The job module's
directory is on the component's import path, so the module may import its
siblings; packages installed in the running Python environment are found as well.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIT_DIR = Path(__file__).parent / "wit"
WORLD = "job-http"
WORLD_NO_HTTP = "job-config"
ENTRY = "quartzite_entry"


def _componentize_py() -> str:
    beside = Path(sys.executable).parent / "componentize-py"
    if beside.exists():
        return str(beside)
    found = shutil.which("componentize-py")
    if found is None:
        raise SystemExit(
            "quartzite_sdk.build: componentize-py is not installed; "
            "pip install componentize-py==0.25.1 (it comes with quartzite-sdk)"
        )
    return found


def build(module: Path, output: Path, *, wasi_http: bool = True) -> None:
    """Builds ``module`` (a .py file that calls quartzite_sdk.export) into ``output``;
    without ``wasi_http`` the component does not import wasi:http."""
    module = module.resolve()
    if not module.is_file() or module.suffix != ".py":
        raise SystemExit(f"quartzite_sdk.build: {module} is not a Python file")
    sdk_parent = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="quartzite-build-") as tmp:
        # componentize-py wants the export class in the app module: this one
        # loads the job's module (which calls export()) and the SDK's Runner.
        (Path(tmp) / f"{ENTRY}.py").write_text(
            f"import {module.stem}  # noqa: F401  (registers the job)\n"
            "from quartzite_sdk._guest import Runner  # noqa: F401\n"
        )
        command = [
            _componentize_py(), "-d", str(WIT_DIR), "-w", WORLD if wasi_http else WORLD_NO_HTTP, "componentize",
            "-p", str(module.parent), "-p", tmp, "-p", str(sdk_parent),
            ENTRY, "-o", str(output),
        ]
        result = subprocess.run(command)
        if result.returncode != 0:
            raise SystemExit(f"quartzite_sdk.build: componentize-py failed (exit {result.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m quartzite_sdk.build", description=__doc__.splitlines()[0])
    parser.add_argument("module", type=Path, help="the job's .py file")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the component to write")
    parser.add_argument("--no-wasi-http", action="store_true",
                        help="leave wasi:http out (quartzite_sdk.http then raises Invalid)")
    args = parser.parse_args()
    build(args.module, args.output, wasi_http=not args.no_wasi_http)
    print(f"built {args.output}")


if __name__ == "__main__":
    main()
