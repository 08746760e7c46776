"""`irstdlab reproduce TABLE`: every table's plan on its own base, the paper's values, the old BAFE head's
behaviour, the side-by-side statistics, and one tiny real run through Ray."""

from __future__ import annotations

import dataclasses

import json
import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from irstdlab.harness import reproduce
from irstdlab.harness.errors import ConfigError
from irstdlab.harness.search import SearchOptions, build_space
from irstdlab.leaderboards.compare import bootstrap_ci
from irstdlab.leaderboards.paper import read_csv
from irstdlab.models import ModelConfig, build
from irstdlab.models.exchange import OLD_HEAD, ChannelExchange, ElementwiseAdapter, Exchange
from irstdlab.harness import space_loader

ROWS = {"II": 6, "III": 6, "IV": 4, "V": 4, "VI": 4, "VII": 3, "VIII": 9, "IX": 4}


def cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "irstdlab.harness.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:  # Ray helpers can outlive the driver: end the group this test started
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def plan(table: str) -> reproduce.Plan:
    return reproduce.plan_of(build_space(SearchOptions(space=reproduce.space_name(table))), table)


def paper_csv(table: str) -> list[dict[str, str]]:
    return [r for r in read_csv() if r["source"] == f"paper:Table {table}"]


# ----------------------------------------------------------------------------------- plans
@pytest.mark.parametrize("table", list(ROWS))
def test_every_table_has_a_plan_with_the_papers_values(table):
    p = plan(table)
    assert p.table == table and len(p.rows) == ROWS[table] and p.space.seeds == 3
    assert p.space.num_trials() == 3 * ROWS[table] and p.space.sampler == "grid"
    # every row is one grid point, every grid point one row; each builds a valid trial config
    assert sorted(json.dumps(r.params, sort_keys=True) for r in p.rows) == \
        sorted(json.dumps(g, sort_keys=True) for g in p.space.grid())
    for row in p.rows:
        p.space.trial_config(row.params, seed=2)
    csv_rows = paper_csv(table)
    if table == "II":  # shipped detectors + the ones we do not ship = the paper's whole table
        labels = {r.label for r in p.rows} | {u.label for u in p.not_reproduced}
        assert len(labels) == len(csv_rows) == 33 and len(p.not_reproduced) == 27
        by_label = {r["method"] + (f" ({r['backbone']})" if r["backbone"] else ""): r for r in csv_rows}
        pairs = [(row.paper, by_label[row.label]) for row in [*p.rows, *p.not_reproduced]]
    else:  # ablation rows in the paper's order
        assert not p.not_reproduced
        pairs = list(zip([r.paper for r in p.rows], csv_rows))
    for ours, theirs in pairs:
        assert ours == {k: float(theirs[k]) for k in ("mAP07", "recall07", "mAP12", "recall12")}


def test_tables_run_on_their_own_bases():
    base = {t: reproduce.base_config(plan(t).space) for t in ROWS}
    released = {"model.lsk_module": True, "model.conv_bn_blocks": True, "model.selection": "dynamic",
                "model.adapter": "mlp", "model.seg_head": True, "model.num_levels": 3, "augment.bagcp": "reference"}
    old = {**{f"model.{k}": v for k, v in OLD_HEAD.items()}, "model.num_levels": 3, "augment.bagcp": "reference"}
    # Table III: the FCOS-R18 host, P3-P7, no BAFE head
    assert {k: base["III"][k] for k in ("model.name", "model.backbone", "model.num_levels")} == \
        {"model.name": "fcos", "model.backbone": "resnet18", "model.num_levels": 5}
    # Table IV: seg-head-only variant: 5 levels, no copy-paste, no LSK, no conv-BN blocks
    assert {k: base["IV"][k] for k in ("model.num_levels", "augment.bagcp", "model.lsk_module",
                                       "model.conv_bn_blocks")} == \
        {"model.num_levels": 5, "augment.bagcp": "none", "model.lsk_module": False, "model.conv_bn_blocks": False}
    for t in ("V", "VI"):  # the old head
        assert {k: base[t][k] for k in old} == old and base[t]["model.backbone"] == "resnet18"
    for t in ("VII", "VIII", "IX"):  # the released head
        assert {k: base[t][k] for k in released} == released
    assert base["II"]["model.name"] == "fcos" and base["II"]["model.backbone"] == "resnet50"
    assert base["II"]["augment.bagcp"] == "none"  # the FCOS baseline without copy-paste
    # Table III (a) and Table IV (a) are the same network: the plain FCOS-R18 host
    a3 = plan("III").space.trial_config(plan("III").rows[0].params).model
    a4 = plan("IV").space.trial_config(plan("IV").rows[0].params).model
    a3, a4 = (dataclasses.replace(m, pretrained=None) for m in (a3, a4))  # counting needs no ImageNet file
    assert sum(x.numel() for x in build(a3).parameters()) == sum(x.numel() for x in build(a4).parameters())
    # the paper's order of the III rows: none, CP, +cluster, +gaussian, +both, +background-aware
    cfgs = [plan("III").space.trial_config(r.params).augment for r in plan("III").rows]
    assert [(c.bagcp, c.bagcp_cluster, c.bagcp_gaussian, c.bagcp_background_aware) for c in cfgs[1:]] == [
        ("reference", False, False, False), ("reference", True, False, False), ("reference", False, True, False),
        ("reference", True, True, False), ("reference", True, True, True)]
    assert cfgs[0].bagcp == "none"


@pytest.mark.timeout(120)
def test_dry_run_json_plans_table_viii(tmp_path):
    proc = cli(["reproduce", "viii", "--dry-run", "--json", "--storage", str(tmp_path), "--images-per-s", "8"],
               tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["table"] == "VIII" and got["seeds"] == 3 and got["trials"] == 27 and len(got["rows"]) == 9
    nine = [1 / 2, 1 / 4, 3 / 4, 1 / 8, 3 / 8, 5 / 8, 7 / 8, 1 / 16, 1 / 32]
    assert [r["params"] for r in got["rows"]] == [{"model.p": p} for p in nine]
    assert [Fraction(r["label"]) for r in got["rows"]] == [Fraction(p) for p in nine]
    assert all(set(r["paper"]) == {"mAP07", "recall07", "mAP12", "recall12"} for r in got["rows"])
    assert got["base_config"]["model.name"] == "bafenet" and got["base_config"]["model.backbone"] == "resnet18"
    # 27 trials x (768 trainval images x 3 repeats x 20 epochs) at 8 images/s
    assert got["gpu_hours"] == pytest.approx(27 * 768 * 3 * 20 / 8 / 3600, abs=0.01)
    assert "GPU-hours: ~" in proc.stdout
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_gpu_hours_come_from_a_measurement_or_are_omitted(tmp_path):
    assert reproduce.measured_throughput(tmp_path / "missing.json") is None
    bench = tmp_path / "bench_train.json"
    bench.write_text(json.dumps({"machine": {"gpu": "Test GPU"}, "gpu": [
        {"amp": "off", "channels_last": False, "images_per_s": 20.0},
        {"amp": "off", "channels_last": True, "images_per_s": 25.0},
        {"amp": "bf16", "channels_last": True, "images_per_s": 60.0}]}))
    ips, source = reproduce.measured_throughput(bench)
    assert ips == 25.0 and "Test GPU" in source and "fp32" in source  # the paper recipe trains in fp32
    space = plan("IX").space
    assert reproduce.estimate_gpu_hours(space, 12, None) is None
    est = reproduce.estimate_gpu_hours(space, 12, ips, source)
    assert est["gpu_hours"] == pytest.approx(12 * 768 * 3 * 20 / 25 / 3600, abs=0.01)


def test_bad_table_and_inconsistent_rows_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="TABLE: 'X' is not one of"):
        reproduce.table_name("X")
    assert reproduce.table_name(" ix ") == "IX"
    text, _, _ = space_loader.resolve("reproduce_table_VII")
    bad = text.replace("params: {model.selection: \"fixed\"}", "params: {model.selection: \"dynamic_st\"}")
    assert bad != text
    space = space_loader.parse(bad, "bad.yaml")
    with pytest.raises(ConfigError, match=r"bad.yaml: reproduce.rows\[1\].params: .* not a point of the space's grid"):
        reproduce.plan_of(space, "VII")
    with pytest.raises(ConfigError, match="reproduce.table: VII, but Table VIII was asked for"):
        reproduce.plan_of(space_loader.parse(text, "vii.yaml"), "VIII")
    proc = cli(["reproduce", "XI", "--dry-run"], tmp_path, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "TABLE" in proc.stderr


# ----------------------------------------------------------------------------------- the old head
def test_elementwise_adapter_is_one_scalar_function_of_each_element():
    torch.manual_seed(0)
    adapter = ElementwiseAdapter(hidden=64)
    assert sum(p.numel() for p in adapter.parameters()) == 64 + 64 + 64 + 1  # Linear(1,64), Linear(64,1)
    x = torch.randn(2, 6, 3, 4)
    y = adapter(x)
    by_hand = torch.relu(x[..., None] * adapter.fc1.weight[:, 0] + adapter.fc1.bias) @ adapter.fc2.weight[0] \
        + adapter.fc2.bias
    torch.testing.assert_close(y, by_hand)
    # element-wise: shuffling the elements shuffles the outputs the same way (no channel or pixel mixing)
    perm = torch.randperm(x.numel())
    torch.testing.assert_close(adapter(x.flatten()[perm]), y.flatten()[perm])


@pytest.mark.parametrize("adapter", ["elementwise", "none"])
def test_old_channel_exchange_swaps_even_channels_through_the_scalar_mlp(adapter):
    """The pre-73066c8 ChannelExchange: channels c % 2 == 0 swap between the tasks (after the scalar
    MLP), odd channels stay; the same for every sample."""
    torch.manual_seed(1)
    ex = ChannelExchange(8, p=0.5, selection="fixed", adapter=adapter, adapter_hidden=16)
    x1, x2 = torch.randn(3, 8, 4, 5), torch.randn(3, 8, 4, 5)
    y1, y2 = ex(x1, x2)
    f = ex.adapter
    even = torch.arange(8) % 2 == 0
    torch.testing.assert_close(y1[:, even], f(x2[:, even]))
    torch.testing.assert_close(y2[:, even], f(x1[:, even]))
    assert torch.equal(y1[:, ~even], x1[:, ~even]) and torch.equal(y2[:, ~even], x2[:, ~even])
    if adapter == "none":  # Table IV (c): a plain swap
        assert torch.equal(y1[:, even], x2[:, even])


def test_old_spatial_exchange_swaps_even_columns_through_the_scalar_mlp():
    torch.manual_seed(2)
    ex = Exchange("spatial", 8, p=0.5, adapter="elementwise", adapter_hidden=8)
    x1, x2 = torch.randn(2, 8, 3, 6), torch.randn(2, 8, 3, 6)
    y1, y2 = ex(x1, x2)
    f = ex.steps[0].adapter
    torch.testing.assert_close(y1[..., ::2], f(x2[..., ::2]))
    assert torch.equal(y1[..., 1::2], x1[..., 1::2]) and torch.equal(y2[..., 1::2], x2[..., 1::2])


def test_old_head_variant_builds_trains_and_has_no_lsk():
    torch.manual_seed(0)
    cfg = ModelConfig(name="bafenet", backbone="resnet18", num_levels=3, fpn_channels=32, head_width=32,
                      norm_groups=8, head_depth=1, **OLD_HEAD)
    model = build(cfg)
    head = model.head
    assert head.lsk is None and isinstance(head.exchange.steps[0].adapter, ElementwiseAdapter)
    assert head.exchange.steps[0].selector.strategy == "fixed" and head.exchange.steps[0].selector.scorer is None
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in head.convs_cls.modules())
    images = torch.rand(2, 1, 64, 64) * 255
    sky = np.zeros((64, 64), np.uint8)
    sky[:32] = 1
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 14.0, 14.0]]), "labels": torch.zeros(1, dtype=torch.int64),
                "sky": torch.as_tensor(sky)} for _ in range(2)]
    model.train()
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert "loss_seg" in losses and all(torch.isfinite(v) for v in losses.values())
    assert head.exchange.steps[0].adapter.fc1.weight.grad is not None  # the scalar MLP trains
    # Table IV's variant: no conv-BN blocks at all, so the head holds no BatchNorm
    plain = build(cfg.replace(conv_bn_blocks=False, num_levels=5))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.head.modules())
    removed = sum(p.numel() for p in head.convs_cls.parameters()) + sum(p.numel() for p in head.convs_seg.parameters())
    assert removed > 0 and isinstance(plain.head.convs_seg, torch.nn.Identity)


# ----------------------------------------------------------------------------------- side by side
def test_side_by_side_reports_mean_interval_difference_and_coverage():
    p = plan("VII")
    values = {"random": [0.20, 0.22, 0.25], "fixed": [0.27, 0.28, 0.26], "dynamic": [0.30]}
    records = []
    for sel, vals in values.items():
        for seed, v in enumerate(vals):
            params = json.dumps({"model.selection": sel, "train.seed": seed})
            records.append({"status": "completed", "params_json": params,
                            "metric.test/mAP07": v, "metric.test/mAP12": v - 0.05, "metric.test/recall": 0.3})
    records.append({"status": "failed", "params_json": json.dumps({"model.selection": "dynamic", "train.seed": 1}),
                    "metric.test/mAP07": 0.99, "metric.test/mAP12": 0.99, "metric.test/recall": 0.99})
    entries = reproduce.side_by_side(p, pd.DataFrame(records))
    get = {(e["label"], e["column"]): e for e in entries}
    fixed = get[("Fixed", "mAP07")]
    lo, hi, _ = bootstrap_ci([np.array(values["fixed"])])[0]
    assert fixed["n"] == 3 and fixed["mean"] == pytest.approx(0.27) and (fixed["ci_low"], fixed["ci_high"]) == (lo, hi)
    assert fixed["diff"] == pytest.approx(0.27 - 0.273) and fixed["inside"] is True
    rnd = get[("Random", "mAP07")]
    assert rnd["paper"] == 0.255 and rnd["inside"] is (rnd["ci_low"] <= 0.255 <= rnd["ci_high"])
    dyn = get[("Dynamic", "mAP07")]  # one seed (the failed trial does not count): a mean, no interval
    assert dyn["n"] == 1 and dyn["mean"] == 0.30 and dyn["inside"] is None
    assert get[("Fixed", "recall12")]["mean"] == pytest.approx(0.3)  # both paper recalls vs our one recall
    text = reproduce.format_side_by_side(p, entries)
    assert "paper in CI" in text and "0.273" in text and "[1 seed]" in text


# ----------------------------------------------------------------------------------- a real run
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tiny_reproduction_through_ray_ends_with_the_side_by_side_table(tmp_path):
    storage = tmp_path / "runs"
    tiny = ["--set", "data.dataset=synthetic", "--set", "data.root=null", "--set", "data.synthetic_images=[4,2,2]",
            "--set", "data.size=128", "--set", "data.repeat=1", "--set", "data.num_workers=0",
            "--set", "model.fpn_channels=32", "--set", "model.head_width=32", "--set", "model.norm_groups=8",
            # random weights: the test machine has no ImageNet file and must not try to fetch one
            "--set", "model.pretrained=null", "--set", "model.frozen_bn=false"]
    args = ["reproduce", "VIII", "--seeds", "1", "--num-samples", "2", "--max-epochs", "1", "--num-cpus", "1",
            "--storage", str(storage), "--json", *tiny]
    proc = cli(args, tmp_path, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the paper beside our test-split numbers" in proc.stdout and "paper in CI" in proc.stdout
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["table"] == "VIII" and result["search"] == "reproduce_table_VIII"
    ran = [e for e in result["rows"] if e["n"] == 1]
    assert {e["label"] for e in ran} == {"1/2", "1/4"} and len(ran) == 8  # 2 rows x 4 paper columns
    assert all(0.0 <= e["mean"] <= 1.0 and e["diff"] == pytest.approx(e["mean"] - e["paper"]) for e in ran)
    assert all(e["n"] == 0 and e["mean"] is None for e in result["rows"] if e["label"] not in {"1/2", "1/4"})
    # the normal search machinery: the leaderboard holds one row per trial, the state allows --resume
    from irstdlab.leaderboards import open as open_leaderboard

    df = open_leaderboard(storage / "leaderboard").read_table(search="reproduce_table_VIII").table.to_pandas()
    assert sorted(df["param.model.p"]) == [0.25, 0.5] and set(df["status"]) == {"completed"}
    stored = json.loads((storage / "reproduce_table_VIII" / "irstdlab-search.json").read_text())
    assert "seeds: 1" in stored["space_text"]
    again = cli(["reproduce", "VIII", "--storage", str(storage), *tiny], tmp_path, timeout=120)
    assert again.returncode == 2 and "--resume" in again.stderr
