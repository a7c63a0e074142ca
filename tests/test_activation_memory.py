"""bench/activation_memory.py: saved activations grow with the audio, and the projection's arithmetic."""

import params
from bench import activation_memory


def test_saved_activations_grow_linearly_with_audio():
    figures = activation_memory.measure(params.make({"preset": "tiny"}), (1.0, 2.0))
    three = activation_memory.measure(params.make({"preset": "tiny"}), (1.0, 3.0))
    assert figures["per_utterance_second"] > 0 and figures["state"] > 0
    assert abs(three["per_utterance_second"] / figures["per_utterance_second"] - 1) < 0.1


def test_largest_micro_batch_leaves_room_for_the_state():
    figures = {"per_utterance_second": 2**20, "fixed": 0, "state": 2**30}
    # 90% of 2 GiB = 1.8 GiB, minus 1 GiB of state = 0.8 GiB = 819.2 MiB; 10 s utterances at 1 MiB/s -> 81.
    assert activation_memory.largest_micro_batch(figures, 10.0, 2) == 81
    assert activation_memory.largest_micro_batch(figures, 10.0, 1) == 0


def test_cli_on_the_tiny_model(capsys):
    assert activation_memory.main(["preset=tiny", "--precisions", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "MiB of saved activations per utterance-second" in out and "80 GB GPU" in out
