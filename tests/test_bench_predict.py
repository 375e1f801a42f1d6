"""bench/bench.py (e): predict's images/s with the input check off and on (no timing is
asserted, only that both are measured on the same films, and a clear skip without models)."""

from test_bench import _bench
from test_predict import make_models

from cxrstn.ood import STATS_FILE


def test_predict_bench_times_the_check_off_and_on(tmp_path, capsys):
    bench = _bench()
    models = make_models(tmp_path, folds=2)
    rates = bench.bench_predict(models, count=3, rounds=1)
    names = list(rates)
    assert [name.split(" (")[0] for name in names] == [
        "predict, input check off",
        "predict, input check on",
    ]
    assert all("(2 stn fold models, " in name and "1 thread)" in name for name in names)
    assert all(rate > 0 for rate in rates.values())
    out = capsys.readouterr().out
    assert "predict, input check on" in out and "x " in out  # the ratio to the check off

    (models / "stn" / "fold1" / STATS_FILE).unlink()
    assert bench.bench_predict(models, count=3, rounds=1) == {}
    assert "(e) predict: skipped" in capsys.readouterr().out
