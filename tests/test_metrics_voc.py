"""VOC AP (mAP07 / mAP12) with hand-computed cases, a loop reference and properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from irstdlab.harness.metrics import (
    average_precision,
    box_iou,
    evaluate_detections,
    evaluate_subsets,
    target_subsets,
)

A = [10.0, 10.0, 13.0, 13.0]  # a 3x3 target in pixel-edge coordinates
B = [30.0, 20.0, 34.0, 25.0]
FAR = [80.0, 80.0, 83.0, 83.0]


def det(boxes, scores):
    return (np.array(boxes, np.float64).reshape(-1, 4), np.array(scores, np.float64))


def both(dets, gts, **kw):
    return (evaluate_detections(dets, gts, ap_mode="11points", **kw),
            evaluate_detections(dets, gts, ap_mode="area", **kw))


# ------------------------------------------------------------------ hand-computed
def test_perfect_detections():
    gts = [np.array([A, B]), np.array([A])]
    dets = [det([A, B], [0.9, 0.8]), det([A], [0.7])]
    for r in both(dets, gts):
        assert r["ap"] == pytest.approx(1.0) and r["recall"] == 1.0
        assert (r["num_gts"], r["num_dets"], r["tp"], r["fp"]) == (3, 3, 3, 0)


def test_no_detections_and_only_false_positives():
    gts = [np.array([A]), np.zeros((0, 4))]
    empty = [det([], []), (np.zeros((0, 4)), np.zeros(0))]
    for r in both(empty, gts):
        assert r["ap"] == 0.0 and r["recall"] == 0.0 and r["num_dets"] == 0
    only_fp = [det([FAR], [0.9]), det([A], [0.8])]  # the second image has no targets
    for r in both(only_fp, gts):
        assert r["ap"] == 0.0 and (r["tp"], r["fp"]) == (0, 2)


def test_duplicates_second_is_fp():
    gts = [np.array([A, B])]
    dets = [det([A, A, B], [0.9, 0.8, 0.7])]
    r07, r12 = both(dets, gts)
    # ranked TP, FP, TP: precision 1, 1/2, 2/3; recall 1/2, 1/2, 1
    np.testing.assert_allclose(r12["precision_curve"], [1, 0.5, 2 / 3])
    np.testing.assert_allclose(r12["recall_curve"], [0.5, 0.5, 1])
    # area: envelope 1 up to recall 1/2, then 2/3 -> 0.5*1 + 0.5*2/3
    assert r12["ap"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # 11 points: r = 0..0.5 (6 points) reach precision 1, r = 0.6..1 (5 points) 2/3
    assert r07["ap"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert (r07["tp"], r07["fp"], r07["recall"]) == (2, 1, 1.0)


def test_ignored_ground_truth():
    gts = [(np.array([A, B]), np.array([False, True]))]  # B is ignored
    dets = [det([B, B, A, FAR], [0.95, 0.9, 0.8, 0.7])]
    r07, r12 = both(dets, gts)
    # B hits are neither TP nor FP (and B is never covered): flags 0,0,TP,FP; num_gts 1
    assert (r12["num_gts"], r12["num_dets"], r12["tp"], r12["fp"]) == (1, 4, 1, 1)
    np.testing.assert_allclose(r12["precision_curve"], [0, 0, 1, 0.5])
    np.testing.assert_allclose(r12["recall_curve"], [0, 0, 1, 1])
    # envelope at recall 1 is 1: area = 1 * 1; every 11-point level reaches precision 1
    assert r12["ap"] == pytest.approx(1.0) and r07["ap"] == pytest.approx(1.0)


def test_image_without_targets_contributes_false_positives():
    gts = [np.array([A]), np.zeros((0, 4))]
    dets = [det([A], [0.9]), det([A], [0.95])]
    r07, r12 = both(dets, gts)
    # ranked FP (0.95, empty image), TP (0.9): precision 0, 1/2 at recall 0, 1
    assert r12["ap"] == pytest.approx(1 * 0.5)
    assert r07["ap"] == pytest.approx(11 * 0.5 / 11)


def test_ties_follow_input_order():
    # within one image: equal scores, the first given takes the GT
    gts = [np.array([A])]
    r = evaluate_detections([det([A, A], [0.5, 0.5])], gts, ap_mode="area")
    np.testing.assert_allclose(r["precision_curve"], [1, 0.5])  # TP then FP -> AP 1
    assert r["ap"] == pytest.approx(1.0)
    # across images: equal scores rank in image order
    gts2 = [np.zeros((0, 4)), np.array([A])]
    r = evaluate_detections([det([A], [0.5]), det([A], [0.5])], gts2, ap_mode="area")
    np.testing.assert_allclose(r["precision_curve"], [0, 0.5])  # FP first -> AP 0.5
    assert r["ap"] == pytest.approx(0.5)
    r = evaluate_detections([det([A], [0.5]), det([A], [0.5])], gts2[::-1], ap_mode="area")
    assert r["ap"] == pytest.approx(1.0)


def test_legacy_and_exact_iou_disagree_on_tiny_boxes():
    shifted = [11.0, 11.0, 14.0, 14.0]  # A moved by 1 px in x and y
    # exact: inter 2*2 = 4, union 9 + 9 - 4 = 14 -> 0.2857
    # legacy: boxes become 4x4 = 16, inter (13-11+1)^2 = 9, union 16 + 16 - 9 = 23 -> 0.3913
    assert box_iou(np.array([A]), np.array([shifted]))[0, 0] == pytest.approx(4 / 14, abs=1e-6)
    assert box_iou(np.array([A]), np.array([shifted]), legacy_coordinates=True)[0, 0] == pytest.approx(9 / 23, abs=1e-6)
    gts, dets = [np.array([A])], [det([shifted], [0.9])]
    legacy = evaluate_detections(dets, gts, iou_thr=0.35, legacy_coordinates=True)
    exact = evaluate_detections(dets, gts, iou_thr=0.35, legacy_coordinates=False)
    assert (legacy["tp"], legacy["ap"]) == (1, pytest.approx(1.0))
    assert (exact["tp"], exact["fp"], exact["ap"]) == (0, 1, 0.0)


def test_recall_point_0_3_is_not_reached_by_3_of_10():
    # mmdet's 11 thresholds come from np.arange: the 4th is 0.30000000000000004 > 3/10
    ap = average_precision(np.array([0.1, 0.2, 0.3]), np.array([1.0, 1.0, 1.0]), "11points")
    assert ap == pytest.approx(3 / 11)


def test_accepts_torch_dicts_and_nx5():
    gts = [torch.tensor([A, B])]
    ref = evaluate_detections([det([A, FAR, B], [0.9, 0.8, 0.7])], gts, ap_mode="area")
    as_dict = [{"boxes": torch.tensor([A, FAR, B]), "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.zeros(3)}]
    nx5 = [np.array([A + [0.9], FAR + [0.8], B + [0.7]])]
    for d in (as_dict, nx5):
        assert evaluate_detections(d, gts, ap_mode="area")["ap"] == pytest.approx(ref["ap"])
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 0.5 + 0.5 * 2/3
    assert ref["ap"] == pytest.approx(0.5 + 0.5 * 2 / 3)


@pytest.mark.parametrize(
    "dets, gts, match",
    [
        ([det([A], [0.9])], [], "detections has 1 images but ground_truths has 0"),
        ([(np.zeros((2, 3)), np.zeros(2))], [np.array([A])], r"detections\[0\].boxes: .*shape \(N, 4\)"),
        ([det([A], [0.9, 0.8])], [np.array([A])], r"detections\[0\].scores"),
        ([det([A], [np.nan])], [np.array([A])], r"detections\[0\].scores: contains NaN"),
        ([det([A], [0.9])], [np.array([[1, 1, 0, 5.0]])], r"ground_truths\[0\].boxes: x2 < x1"),
        ([det([A], [0.9])], [(np.array([A]), np.array([1, 0]))], r"ground_truths\[0\].ignore"),
    ],
)
def test_bad_inputs_name_the_image_and_field(dets, gts, match):
    with pytest.raises(ValueError, match=match):
        evaluate_detections(dets, gts)


def test_subsets_background_only_false_alarms():
    gts = [np.array([A]), np.zeros((0, 4)), (np.array([B]), np.array([True]))]
    dets = [det([A], [0.9]), det([FAR, A], [0.8, 0.7]), det([FAR], [0.6])]
    subsets = target_subsets(gts)
    assert subsets == {"all": [0, 1, 2], "with_targets": [0], "background_only": [1, 2]}
    res = evaluate_subsets(evaluate_detections, dets, gts, subsets, ap_mode="area")
    assert res["with_targets"]["ap"] == pytest.approx(1.0)
    assert (res["background_only"]["fp"], res["background_only"]["num_gts"]) == (3, 0)
    # all: TP .9, FP .8, FP .7, FP .6 -> precision 1 at recall 1 first -> AP 1
    assert res["all"]["ap"] == pytest.approx(1.0) and res["all"]["fp"] == 3
    assert evaluate_subsets(evaluate_detections, dets, gts, {"none": []}) == {"none": {"num_images": 0}}


# ------------------------------------------------------------ loop reference
def reference_eval(dets, gts, iou_thr, mode, legacy, tie_order):
    """mmdet's algorithm as plain loops (written from its description, per image)."""
    extra = 1.0 if legacy else 0.0
    sort = (lambda s: np.argsort(-np.asarray(s, np.float32))) if tie_order == "mmdet" else (
        lambda s: np.argsort(-np.asarray(s), kind="stable"))
    tps, fps, all_scores, num_gts = [], [], [], 0
    for (boxes, scores), (gboxes, ignore) in zip(dets, gts):
        g = np.concatenate([gboxes[~ignore], gboxes[ignore]])
        gi = np.concatenate([np.zeros((~ignore).sum(), bool), np.ones(ignore.sum(), bool)])
        num_gts += int((~ignore).sum())
        tp, fp = np.zeros(len(boxes)), np.zeros(len(boxes))
        covered = np.zeros(len(g), bool)
        for i in sort(scores):
            best, arg = -1.0, -1
            for j in range(len(g)):
                b, t = boxes[i].astype(np.float32), g[j].astype(np.float32)
                iw = max(min(b[2], t[2]) - max(b[0], t[0]) + extra, 0)
                ih = max(min(b[3], t[3]) - max(b[1], t[1]) + extra, 0)
                area = lambda x: (x[2] - x[0] + extra) * (x[3] - x[1] + extra)  # noqa: E731
                iou = np.float32(iw * ih) / np.float32(max(area(b) + area(t) - iw * ih, 1e-6))
                if iou > best:
                    best, arg = iou, j
            if best >= iou_thr:
                if gi[arg]:
                    continue
                if not covered[arg]:
                    covered[arg], tp[i] = True, 1
                else:
                    fp[i] = 1
            else:
                fp[i] = 1
        tps.append(tp), fps.append(fp), all_scores.append(scores)
    s = np.concatenate(all_scores)
    order = sort(s)
    tp, fp = np.cumsum(np.concatenate(tps)[order]), np.cumsum(np.concatenate(fps)[order])
    rec = tp / max(num_gts, np.finfo(np.float32).eps)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float32).eps)
    if mode == "area":
        mrec, mpre = np.r_[0, rec, 1], np.r_[0, prec, 0]
        for k in range(len(mpre) - 1, 0, -1):
            mpre[k - 1] = max(mpre[k - 1], mpre[k])
        idx = np.where(mrec[1:] != mrec[:-1])[0]
        return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1])), rec
    ap = 0.0
    for thr in np.arange(0, 1 + 1e-3, 0.1):
        p = prec[rec >= thr]
        ap += p.max() if p.size else 0
    return ap / 11, rec


@st.composite
def scenes(draw, distinct_scores=False):
    n_img = draw(st.integers(1, 4))
    coord = st.integers(0, 12)
    dets, gts = [], []
    for _ in range(n_img):
        m = draw(st.integers(0, 4))
        g = []
        for _ in range(m):
            x, y, w, h = draw(coord), draw(coord), draw(st.integers(1, 4)), draw(st.integers(1, 4))
            g.append([x, y, x + w, y + h])
        ign = np.array(draw(st.lists(st.booleans(), min_size=m, max_size=m)), bool)
        gts.append((np.array(g, np.float64).reshape(-1, 4), ign))
        k = draw(st.integers(0, 6))
        b = []
        for _ in range(k):
            x, y, w, h = draw(coord), draw(coord), draw(st.integers(1, 4)), draw(st.integers(1, 4))
            b.append([x, y, x + w, y + h])
        s = draw(st.lists(st.sampled_from([0.2, 0.5, 0.7, 0.9]), min_size=k, max_size=k))
        dets.append((np.array(b, np.float64).reshape(-1, 4), np.array(s, np.float64)))
    if distinct_scores:  # unique scores, so no tie rule is involved
        total = sum(len(s) for _, s in dets)
        perm = iter(np.random.default_rng(draw(st.integers(0, 999))).permutation(total) / max(total, 1) + 0.01)
        dets = [(b, np.array([next(perm) for _ in s])) for b, s in dets]
    return dets, gts


@settings(max_examples=150, deadline=None)
@given(scenes(), st.sampled_from(["11points", "area"]), st.booleans(), st.sampled_from([0.3, 0.5]),
       st.sampled_from(["stable", "mmdet"]))
def test_matches_loop_reference(scene, mode, legacy, thr, ties):
    dets, gts = scene
    r = evaluate_detections(dets, gts, iou_thr=thr, ap_mode=mode, legacy_coordinates=legacy, tie_order=ties)
    ap, rec = reference_eval(dets, gts, thr, mode, legacy, ties)
    assert r["ap"] == pytest.approx(ap, abs=1e-9)
    np.testing.assert_allclose(r["recall_curve"], rec)
    assert 0.0 <= r["ap"] <= 1.0


@settings(max_examples=60, deadline=None)
@given(scenes(distinct_scores=True), st.sampled_from(["11points", "area"]), st.randoms())
def test_invariant_to_image_order(scene, mode, rnd):
    dets, gts = scene
    perm = list(range(len(dets)))
    rnd.shuffle(perm)
    a = evaluate_detections(dets, gts, ap_mode=mode)
    b = evaluate_detections([dets[i] for i in perm], [gts[i] for i in perm], ap_mode=mode)
    assert a["ap"] == pytest.approx(b["ap"], abs=1e-12) and a["recall"] == b["recall"]


@settings(max_examples=60, deadline=None)
@given(scenes(), st.sampled_from(["11points", "area"]), st.integers(0, 3))
def test_adding_a_lower_scored_false_positive_never_raises_ap(scene, mode, where):
    dets, gts = scene
    before = evaluate_detections(dets, gts, ap_mode=mode)["ap"]
    i = where % len(dets)
    boxes, scores = dets[i]
    extra = (np.vstack([boxes, [[500, 500, 503, 503]]]), np.append(scores, 0.01))
    after = evaluate_detections(dets[:i] + [extra] + dets[i + 1:], gts, ap_mode=mode)["ap"]
    assert after <= before + 1e-12


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 30))
def test_both_modes_give_one_on_a_perfect_curve(n):
    recall = np.arange(1, n + 1) / n
    assert average_precision(recall, np.ones(n), "11points") == pytest.approx(1.0)
    assert average_precision(recall, np.ones(n), "area") == pytest.approx(1.0)


def test_reference_shift_example_fails_at_half():
    # the reference evaluates against GT shifted by -1 with mmdet's legacy +1 areas:
    # true extent [203,36,206,40] vs the -1 shifted GT [202,35,205,39]:
    # legacy widths 4 and heights 5 -> areas 20; intersection 3 x 4 = 12; IoU 12 / (40 - 12)
    gt, pred = np.array([[202, 35, 205, 39.0]]), np.array([[203, 36, 206, 40.0]])
    assert box_iou(pred, gt, legacy_coordinates=True)[0, 0] == pytest.approx(12 / 28, abs=1e-6)
    assert evaluate_detections([(pred, [0.9])], [gt])["tp"] == 0


@pytest.mark.shared_data
def test_true_extent_against_reference_ground_truth(densesirst_root):
    from irstdlab.datasets.readers import open_dataset

    kw = {"split": "test_v2", "load_masks": False}
    clean = [s.boxes for s in open_dataset("densesirst", densesirst_root, protocol="clean", **kw)]
    shifted = [s.boxes for s in open_dataset("densesirst", densesirst_root, protocol="reference", **kw)]
    rng = np.random.default_rng(0)
    dets = [(b, rng.random(len(b))) for b in clean]  # a detector that finds every true extent
    for legacy in (True, False):
        own = evaluate_detections(dets, clean, ap_mode="area", legacy_coordinates=legacy)
        assert own["ap"] == pytest.approx(1.0) and own["recall"] == 1.0
    legacy = evaluate_detections(dets, shifted, ap_mode="area", legacy_coordinates=True)
    exact = evaluate_detections(dets, shifted, ap_mode="area", legacy_coordinates=False)
    # the released protocol's -1 shift fails most tiny targets, even with lenient +1 areas
    assert exact["recall"] < legacy["recall"] < 0.5
    assert legacy["num_gts"] == sum(len(b) for b in clean)
