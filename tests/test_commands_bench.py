"""`h4d bench`: lists the benchmarks of the source checkout and runs one with its own arguments."""

from h4djax.cli import main


def test_bench_lists_and_runs_a_benchmark_help(capsys):
    assert main(["bench"]) == 0
    listing = capsys.readouterr().out
    for name in ("body", "triangulate", "fit", "collision"):
        assert f"  {name} " in listing
    assert "reference_triangulate" not in listing  # helper modules are not benchmarks
    assert main(["bench", "body", "--help"]) == 0  # argparse exits 0 from inside the benchmark script
    assert "usage: body.py" in capsys.readouterr().out


def test_bench_unknown_name_is_a_clear_error(capsys):
    assert main(["bench", "no_such_bench"]) == 1
    assert "unknown benchmark 'no_such_bench'" in capsys.readouterr().err
