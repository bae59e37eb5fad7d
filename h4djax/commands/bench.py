"""`h4d bench NAME [ARGS...]`: run one of the benchmarks in the repository's `bench/` folder.

The benchmarks are scripts of the source checkout (they compare against reference implementations that are not
package dependencies: scipy/aniposelib/PyTorch baselines), so they are not installed with the package; this command
finds `bench/` next to the installed (editable) package or in the current directory and runs `bench/NAME.py` with
the remaining arguments, exactly as `python bench/NAME.py ARGS...` would. Each benchmark measures compilation and
steady state separately and writes its section of `bench/RESULTS.md`.

    h4d bench                       # list the benchmarks
    h4d bench triangulate --help    # a benchmark's own options
"""

from __future__ import annotations

import argparse
import ast
import runpy
import sys
from pathlib import Path

from h4djax.errors import H4DError


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="run a benchmark of bench/ (source checkout)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="benchmark name (bench/NAME.py); omit to list them")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the benchmark")
    p.set_defaults(func=run)


def bench_dir() -> Path | None:
    """`bench/` of the source checkout: beside the package (editable install) or in the working directory."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "bench" / "RESULTS.md").is_file():
            return root / "bench"
    return None


def available(directory: Path) -> dict[str, str]:
    """Benchmark name -> first line of its docstring (helper modules such as reference implementations are
    excluded: a benchmark is a script with a `__main__` block)."""
    out = {}
    for path in sorted(directory.glob("*.py")):
        text = path.read_text()
        if "__main__" not in text or path.name.startswith("reference_"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(text)) or ""
        except SyntaxError:
            doc = ""
        out[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ""
    return out


def run(args) -> int:
    directory = bench_dir()
    if directory is None:
        raise H4DError("no bench/ folder found: benchmarks run from a source checkout (git clone), not from an "
                       "installed wheel; run h4d bench from the repository root")
    names = available(directory)
    if not args.name:
        print(f"benchmarks in {directory}:")
        for name, doc in names.items():
            print(f"  {name:<16s} {doc}")
        return 0
    if args.name not in names:
        raise H4DError(f"unknown benchmark {args.name!r}; available: {', '.join(names)}")
    script = directory / f"{args.name}.py"
    argv, path = sys.argv, list(sys.path)
    sys.argv = [str(script), *args.args]
    sys.path.insert(0, str(directory))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:  # argparse --help / the script's own exit status
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv, sys.path[:] = argv, path
    return 0
