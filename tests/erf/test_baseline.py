import pytest
import torch

from erftools import ErftoolsError
from erftools.erf import random_baseline


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)  # same draws: exact by construction


def test_seeded_random_baseline_of_a_model():
    import erftools

    trained = erftools.create_model("resnet18", weights="random", num_classes=10)  # stands for a trained model
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = random_baseline(trained, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is untouched
    b = random_baseline("resnet18", seed=1, num_classes=10)
    c = random_baseline(trained, seed=2)
    assert _same(a, b) and not _same(a, c)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in trained.state_dict().items()}
    assert a.erftools_info.weights == "random" and a.erftools_seed == 1 and not a.training


def test_a_module_not_made_by_erftools_is_refused():
    with pytest.raises(ErftoolsError, match="pass its registry or timm name"):
        random_baseline(torch.nn.Conv2d(3, 3, 1))
