"""The bench's FLOP count: what its GFLOP/s figure divides by."""

from __future__ import annotations

from bench.hardware import lstm_flops_per_token

BASE = {"embed_dim": 128, "hidden_size": 128, "num_layers": 1, "bidirectional": True}


def test_one_bilstm_layer_counts_four_gates_both_directions() -> None:
    # 2 directions x 2 FLOPs per multiply-add x 4 gates x hidden x (input + hidden)
    assert lstm_flops_per_token(BASE) == 2 * 2 * 4 * 128 * (128 + 128)


def test_second_layer_reads_both_directions_and_members_multiply() -> None:
    two_layers = lstm_flops_per_token({**BASE, "num_layers": 2})
    assert two_layers == lstm_flops_per_token(BASE) + 2 * 2 * 4 * 128 * (256 + 128)
    assert lstm_flops_per_token({**BASE, "members": 3}) == 3 * lstm_flops_per_token(BASE)
    assert lstm_flops_per_token({**BASE, "bidirectional": False}) == lstm_flops_per_token(BASE) / 2
