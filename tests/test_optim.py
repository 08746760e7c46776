"""Optimiser parameter groups and the LR schedules of the reference recipes."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from irstdlab.harness.optim import (
    LRFactor,
    OptimConfig,
    ScheduleConfig,
    build_optimizer,
    build_scheduler,
    param_groups,
)


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Conv2d(4, 2, 1, bias=False), nn.BatchNorm2d(2))


def test_no_decay_on_norm_and_bias():
    model = _tiny()
    model[0].weight.requires_grad_(False)  # frozen params are left out
    decay, no_decay = param_groups(model, OptimConfig(weight_decay=0.05))
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[2].weight)}
    expected_no_decay = [model[0].bias, model[1].weight, model[1].bias, model[3].weight, model[3].bias]
    assert {id(p) for p in no_decay["params"]} == {id(p) for p in expected_no_decay}


@pytest.mark.parametrize("name", ["dadapt_adam", "adamw", "sgd"])
def test_each_optimizer_steps(name):
    model = _tiny()
    opt = build_optimizer(model, OptimConfig(name=name, lr=1.0 if name == "dadapt_adam" else 0.01))
    before = model[2].weight.detach().clone()
    model(torch.randn(2, 1, 8, 8)).pow(2).mean().backward()
    opt.step()
    assert not torch.equal(before, model[2].weight)


def test_reference_schedule_constant_warmup_then_steps():
    f = LRFactor(ScheduleConfig(), iters_per_epoch=100)
    assert f(0) == pytest.approx(1 / 3) and f(499) == pytest.approx(1 / 3)
    assert f(500) == 1.0 and f(799) == 1.0
    assert f(800) == pytest.approx(0.1)  # epoch 8 starts at iteration 800
    assert f(1599) == pytest.approx(0.1) and f(1600) == pytest.approx(0.01)


def test_oscar_schedule_linear_warmup_and_poly_per_epoch():
    cfg = ScheduleConfig(epochs=12, warmup="linear", warmup_iters=1000, warmup_factor=1e-6, policy="poly")
    f = LRFactor(cfg, iters_per_epoch=577)
    assert f(0) == pytest.approx(1e-6)
    assert f(500) == pytest.approx(1 - 0.5 * (1 - 1e-6))
    assert f(577 * 1 + 500) == pytest.approx(11 / 12)  # after warm-up: lr x (1 - epoch/12)
    assert f(577 * 11) == pytest.approx(1 / 12)


def test_scheduler_state_round_trips_with_weights_only():
    model = _tiny()
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.1))
    sched = build_scheduler(opt, ScheduleConfig(warmup_iters=2), iters_per_epoch=10)
    for _ in range(3):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"sched": sched.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2 = build_optimizer(model, OptimConfig(name="sgd", lr=0.1))
    sched2 = build_scheduler(opt2, ScheduleConfig(warmup_iters=2), iters_per_epoch=10)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    assert sched2.last_epoch == 3 and sched2.get_last_lr() == sched.get_last_lr()


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (OptimConfig, {"lr": 0}, "lr: must be > 0"),
        (OptimConfig, {"betas": (0.9, 1.0)}, "betas"),
        (ScheduleConfig, {"milestones": (16, 8)}, "milestones"),
        (ScheduleConfig, {"epochs": 0}, "epochs: must be >= 1"),
    ],
)
def test_validation(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs).validate()
