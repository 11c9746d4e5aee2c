"""freekd.hooks: what each hook records, and that none outlives its block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from freekd.hooks import capture_input, eval_mode, last_linear, spatial_blocks


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 8×8 → 4×4
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
        nn.ReLU(),
        nn.Linear(5, 3),
    )


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_spatial_blocks_keep_each_stage_end_and_leave_no_hook() -> None:
    model = small_cnn()
    with spatial_blocks(model) as blocks:
        model(torch.rand(2, 1, 8, 8))
        assert hook_count(model) > 0
    assert list(blocks) == [(8, 8), (4, 4)]  # forward order; the 1×1 pooled map is left out
    assert blocks[(8, 8)].shape == (2, 4, 8, 8)  # the ReLU after the first convolution
    assert blocks[(4, 4)].shape == (2, 6, 4, 4)  # the ReLU after the BatchNorm
    assert hook_count(model) == 0


def test_capture_input_keeps_the_last_input_of_the_layer() -> None:
    model = small_cnn()
    layer = last_linear(model)
    assert layer is model[-1]
    first, second = torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8)
    with capture_input(layer) as captured:
        model(first)
        logits = model(second)
    assert captured.value is not None
    assert captured.value.shape == (3, 5)  # the second pass's penultimate features
    torch.testing.assert_close(layer(captured.value), logits)
    assert hook_count(model) == 0
    assert last_linear(nn.Sequential(nn.Conv2d(1, 1, 1))) is None


def test_eval_mode_restores_every_submodule_mode() -> None:
    model = small_cnn().train()
    model[4].eval()  # a submodule with its own mode
    before = [m.training for m in model.modules()]
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before


def test_hooks_are_removed_when_the_block_raises() -> None:
    model = small_cnn().train()
    layer = last_linear(model)
    assert layer is not None
    with (  # noqa: PT012  (the hooks must be active when the block raises)
        pytest.raises(RuntimeError, match="boom"),
        spatial_blocks(model),
        capture_input(layer),
        eval_mode(model),
    ):
        model(torch.rand(2, 1, 8, 8))
        raise RuntimeError("boom")
    assert hook_count(model) == 0
    assert all(m.training for m in model.modules())


def test_spatial_blocks_end_a_residual_stage_after_its_sum_and_relu() -> None:
    """The block kept for a size is the stage's own output (container), not the last leaf's:
    freekd's ResNets add the shortcut and apply a functional ReLU after their last BatchNorm."""
    from freekd.models import build_model

    torch.manual_seed(0)
    net = build_model("resnet8", num_classes=10, input_shape=(1, 28, 28)).eval()
    outputs: list[torch.Tensor] = []
    handles = [
        stage.register_forward_hook(lambda m, i, o: outputs.append(o)) for stage in net.stages
    ]
    with torch.no_grad(), spatial_blocks(net) as blocks:
        net(torch.rand(2, 1, 28, 28))
    for handle in handles:
        handle.remove()
    for stage_output in outputs:
        size = tuple(stage_output.shape[-2:])
        assert torch.equal(blocks[size], stage_output)
        assert (blocks[size] >= 0).all()  # after the ReLU
