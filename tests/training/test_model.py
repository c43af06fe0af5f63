"""Serving safety of the model: a document's scores depend only on its own tokens."""

from __future__ import annotations

import pytest
import torch

from training.model import POOLINGS, ModelConfig, ProbabilityModel, build_model


def _scores(model: torch.nn.Module, docs: list[list[int]], width: int | None = None) -> torch.Tensor:
    width = width or max(len(d) for d in docs)
    ids = torch.zeros(len(docs), width, dtype=torch.long)
    for row, doc in enumerate(docs):
        ids[row, : len(doc)] = torch.tensor(doc)
    return model(ids, torch.tensor([len(d) for d in docs]))


@pytest.mark.parametrize(("pooling", "shortcut", "members"),
                         [(p, False, 1) for p in POOLINGS] + [("max_mean", True, 1), ("max_mean", False, 3)])
def test_padding_and_batch_neighbours_do_not_change_scores(pooling: str, shortcut: bool, members: int) -> None:
    torch.manual_seed(0)
    model = ProbabilityModel(build_model(ModelConfig(vocab_size=50, num_classes=4, embed_dim=8, hidden_size=8,
                                                     num_layers=2, pooling=pooling, word_shortcut=shortcut,
                                                     members=members))).eval()
    generator = torch.Generator().manual_seed(1)
    docs = [torch.randint(2, 50, (n,), generator=generator).tolist() for n in (7, 1, 23, 12)]
    with torch.no_grad():
        alone = torch.cat([_scores(model, [d]) for d in docs])
        together = _scores(model, docs)
        extra_padding = _scores(model, docs, width=40)
        reordered = _scores(model, docs[::-1])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(extra_padding, alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(reordered.flip(0), alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(alone.sum(dim=1), torch.ones(len(docs)))


def test_token_after_the_length_is_ignored_but_a_real_token_is_not() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=50, num_classes=3, embed_dim=8, hidden_size=8)).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    garbage = torch.tensor([[5, 6, 7, 9, 9]])
    with torch.no_grad():
        base = model(ids, torch.tensor([3]))
        torch.testing.assert_close(model(garbage, torch.tensor([3])), base)
        assert not torch.allclose(model(garbage, torch.tensor([5])), base)


def test_cli_pooling_choices_match_the_model() -> None:
    from training.config import POOLINGS as CLI_POOLINGS

    assert CLI_POOLINGS == POOLINGS


def test_ensemble_probabilities_are_the_mean_of_its_members() -> None:
    torch.manual_seed(0)
    ensemble = ProbabilityModel(build_model(ModelConfig(vocab_size=50, num_classes=5, embed_dim=8, hidden_size=8,
                                                        members=3))).eval()
    docs = [[3, 4, 5, 6], [7, 8], [9, 10, 11, 12, 13, 14]]
    with torch.no_grad():
        expected = torch.stack([torch.softmax(_scores(m, docs), dim=-1)
                                for m in ensemble.classifier.members]).mean(dim=0)
        members = [torch.softmax(_scores(m, docs), dim=-1) for m in ensemble.classifier.members]
        torch.testing.assert_close(_scores(ensemble, docs), expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(members[0], members[1]), "members are independently initialised"
    assert len(ensemble.classifier.members) == 3 and ensemble.classifier.members[0].config.members == 1
