"""TeacherEnsemble: one vectorised call equals the members one by one, gradients stay apart."""

from __future__ import annotations

import pytest
import torch

from freekd.errors import FreekdError
from freekd.models import ImageClassifier, build_model
from freekd.teachers.ensemble import StackedTeacherEnsemble, TeacherEnsemble


def member(arch: str = "lenet5-half", seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    shape = (1, 28, 28)
    return ImageClassifier(
        build_model(arch, num_classes=10, input_shape=shape),
        arch=arch,
        arch_kwargs={},
        num_classes=10,
        input_shape=shape,
        mean=[0.13],
        std=[0.31],
    )


@pytest.mark.parametrize("kind", [TeacherEnsemble, StackedTeacherEnsemble])
def test_forward_votes_gradients_and_members_match_the_loop(kind: type) -> None:
    members = [member(seed=k) for k in range(4)]
    ensemble = kind([member(seed=k) for k in range(4)])
    images = torch.rand((4, 6, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    loop = torch.stack([m(images[k]) for k, m in enumerate(members)])
    torch.testing.assert_close(ensemble(images), loop, rtol=1e-5, atol=1e-5)
    shared = images[0]
    torch.testing.assert_close(
        ensemble(shared), torch.stack([m(shared) for m in members]), rtol=1e-5, atol=1e-5
    )
    predictions = torch.stack([m(shared).argmax(dim=1) for m in members])
    expected = torch.nn.functional.one_hot(predictions, 10).sum(dim=0)
    torch.testing.assert_close(ensemble.votes(shared, chunk=4), expected)
    # A sum of per-member losses gives every member exactly its own gradient.
    ensemble(images).logsumexp(dim=-1).sum().backward()
    name, parameter = next(iter(members[2].named_parameters()))
    members[2](images[2]).logsumexp(dim=-1).sum().backward()
    if isinstance(ensemble, StackedTeacherEnsemble):
        own = ensemble.stacked[name.replace(".", "__")].grad
        assert own is not None
        own = own[2]
    else:
        own = dict(ensemble.member(2).named_parameters())[name].grad
    assert parameter.grad is not None
    torch.testing.assert_close(own, parameter.grad, rtol=1e-5, atol=1e-6)
    copy = ensemble.member(3)
    torch.testing.assert_close(copy(shared), members[3](shared))
    again = kind([member(seed=9) for _ in range(4)])
    again.load_stacked_state_dict(ensemble.stacked_state_dict())
    torch.testing.assert_close(again(shared), ensemble(shared))


def test_refusals() -> None:
    with pytest.raises(FreekdError, match="BatchNorm"):
        StackedTeacherEnsemble([member("tiny-cnn")])
    assert TeacherEnsemble([member("tiny-cnn"), member("tiny-cnn")]).size == 2
    with pytest.raises(FreekdError, match="same architecture"):
        TeacherEnsemble([member(), member("lenet5")])
    ensemble = StackedTeacherEnsemble([member(), member(seed=1)])
    with pytest.raises(FreekdError, match="3 image batches for 2"):
        ensemble(torch.rand(3, 2, 1, 28, 28))
    with pytest.raises(FreekdError, match="do not fit"):
        ensemble.load_stacked_state_dict({"nope": torch.zeros(1)})
