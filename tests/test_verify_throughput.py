"""bench.verify_throughput on a tiny dataset it builds itself: it runs and prints its figures."""

from bench import verify_throughput


def test_builds_a_dataset_and_prints_the_ratio(capsys):
    assert verify_throughput.main(["--hours", "0.05", "--repeats", "1", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    for method in ("md5sum (1 process)", "sha256sum (1 process)", "verify --jobs 1", "verify --jobs 2"):
        assert method in out
    assert "verify --jobs 2 / md5sum: " in out and "goal >= 0.8 x" in out
