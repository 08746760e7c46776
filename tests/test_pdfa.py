"""Pd / Fa on constructed scenes, with the counts worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from irstdlab.harness.metrics import evaluate_subsets, target_subsets
from irstdlab.harness.pdfa import evaluate_pdfa


def centred(x, y, half=1.0):
    return [x - half, y - half, x + half, y + half]


def scene():
    # image 0 (100 x 100): T1 centroid (12, 12), T2 centroid (41.5, 41.5), T3 a large box, centroid (70, 65)
    gt0 = np.array([[10, 10, 14, 14], [40, 40, 43, 43], [60, 60, 80, 70]], np.float64)
    det0 = np.array([
        centred(13, 12),      # .90: 1 px from T1 -> detects T1
        centred(12, 14),      # .80: T1 already taken -> false alarm
        centred(45, 41.5),    # .70: 3.5 px from T2, outside its box -> false alarm
        centred(43, 43),      # .60: 2.12 px from T2, on its box edge -> detects T2
        centred(62, 62),      # .55: 8.5 px from T3's centroid but inside its box
        centred(12, 12),      # .05: below the score threshold, ignored
    ])
    s0 = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.05])
    # image 1 (50 x 40): no target, one detection -> false alarm
    return [(det0, s0), (np.array([centred(5, 5)]), np.array([0.5]))], [gt0, np.zeros((0, 4))], [(100, 100), (50, 40)]


def test_centroid_mode_counts():
    dets, gts, sizes = scene()
    r = evaluate_pdfa(dets, gts, score_thr=0.1, radius=3, image_sizes=sizes)
    # detected T1, T2; false alarms: .8, .7, .55 (T3 is 8.5 px away) and image 1's
    assert (r["num_targets"], r["num_detected"], r["num_false_alarms"], r["num_images"]) == (3, 2, 4, 2)
    assert r["pd"] == pytest.approx(2 / 3)
    assert r["fa_per_image"] == pytest.approx(4 / 2)
    assert r["fa_per_mpix"] == pytest.approx(4 / ((100 * 100 + 50 * 40) / 1e6))  # 4 / 0.012
    assert r["false_alarms"].tolist() == [3, 1]
    # a 1.5 px radius loses T2 (2.12 px): .6 becomes a false alarm too
    r = evaluate_pdfa(dets, gts, score_thr=0.1, radius=1.5)
    assert (r["num_detected"], r["num_false_alarms"]) == (1, 5) and math.isnan(r["fa_per_mpix"])
    # without the threshold the .05 detection sits on T1, which is taken: one more false alarm
    assert evaluate_pdfa(dets, gts, radius=3)["num_false_alarms"] == 5


def test_box_mode_counts():
    dets, gts, sizes = scene()
    r = evaluate_pdfa(dets, gts, score_thr=0.1, match="box", image_sizes=(100, 100))
    # T1 (.9), T2 (.6, on the closed edge), T3 (.55, inside); false alarms .8, .7 and image 1's
    assert (r["num_detected"], r["num_false_alarms"], r["pd"]) == (3, 3, 1.0)
    assert r["fa_per_mpix"] == pytest.approx(3 / (2 * 100 * 100 / 1e6))


def test_greedy_by_score_takes_the_nearest_free_target():
    gts = [np.array([centred(20, 20), centred(23, 20)])]  # centroids 3 px apart
    # the higher score (given second) is 1.2 px from T_b and 1.8 px from T_a: it takes T_b;
    # the lower one is 1 px from T_a and 4 px from T_b: it takes T_a -> both detected
    dets = [(np.array([centred(19, 20), centred(21.8, 20)]), np.array([0.4, 0.9]))]
    r = evaluate_pdfa(dets, gts, radius=3)
    assert (r["num_detected"], r["num_false_alarms"]) == (2, 0)


def test_given_centroids_and_ignored_targets():
    gts = [(np.array([[0, 0, 10, 10], [50, 50, 54, 54]], np.float64), np.array([False, True]))]
    dets = [(np.array([centred(9, 9), centred(52, 52), centred(52, 52)]), np.array([0.9, 0.8, 0.7]))]
    # box centre (5, 5) is 5.7 px from (9, 9): missed; the mask centroid (8.5, 8.5) is 0.7 px away
    r = evaluate_pdfa(dets, gts, radius=3)
    assert (r["num_targets"], r["num_detected"], r["num_false_alarms"]) == (1, 0, 1)
    r = evaluate_pdfa(dets, gts, radius=3, centroids=[np.array([[8.5, 8.5], [52, 52]])])
    assert (r["num_targets"], r["num_detected"], r["num_false_alarms"]) == (1, 1, 0)  # hits on the ignored one are not FA


def test_background_only_subset_and_empty_target_pd():
    dets, gts, sizes = scene()
    res = evaluate_subsets(evaluate_pdfa, dets, gts, target_subsets(gts),
                           per_image={"image_sizes": sizes}, score_thr=0.1)
    bg = res["background_only"]
    assert (bg["num_images"], bg["num_false_alarms"], bg["fa_per_image"]) == (1, 1, 1.0)
    assert bg["fa_per_mpix"] == pytest.approx(1 / (50 * 40 / 1e6)) and math.isnan(bg["pd"])
    assert res["with_targets"]["false_alarms"].tolist() == [3]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"match": "iou"}, "match must be"),
        ({"radius": -1}, "radius"),
        ({"image_sizes": [(10, 10)] * 3}, "image_sizes"),
        ({"centroids": [np.zeros((2, 2)), np.zeros((0, 2))]}, r"centroids\[0\]"),
    ],
)
def test_bad_inputs(kw, match):
    dets, gts, _ = scene()
    with pytest.raises(ValueError, match=match):
        evaluate_pdfa(dets, gts, **kw)
