"""The adapted-limit benchmark's grouping of keys by where their weights live."""

from benchmarks.adapted_limit_bench import key_groups, spread

FC_BIG = "fully_connected:in=1x1x480,out=1000,act=none,dt=float32"  # 1.8 MB of weights
FC_SMALL = "fully_connected:in=1x1x64,out=1000,act=none,dt=float32"  # 0.24 MB
CONV = "conv2d:in=16x16x32,out=64,k=1x1,s=1x1,pad=same,act=relu6,dt=float32"
DW_1PX = "depthwise_conv2d:in=1x1x1024,k=3x3,s=1x1,pad=same,act=relu6,dt=float32"


def test_spread_is_max_minus_min_over_the_median():
    assert spread([9.0, 10.0, 12.0]) == 0.3


def test_keys_are_grouped_by_shape_and_by_the_l2_their_weights_fit():
    times = {FC_BIG: [30.0, 36.0, 40.0], FC_SMALL: [5.0, 5.1, 5.2], CONV: [2.0, 2.0, 2.1],
             DW_1PX: [1.0, 1.0, 1.0]}
    groups = key_groups(times, l2_mb=0.5)
    assert groups["matrix-vector, beyond the L2"]["keys"] == 1
    assert round(groups["matrix-vector, beyond the L2"]["median_spread_pct"], 6) == 27.777778
    assert groups["matrix-vector, fit in the L2"]["keys"] == 1
    assert groups["other, fit in the L2"]["keys"] == 2  # a depthwise on 1x1 px is no matrix
    # a larger L2 holds the big classifier too
    assert set(key_groups(times, l2_mb=2.0)) == {"matrix-vector, fit in the L2",
                                                  "other, fit in the L2"}
