"""Published rows per categorical feature of the two Criteo data sets (C1..C26)."""

# Criteo Kaggle (Display Advertising Challenge) rows per categorical feature,
# as counted by the reference DLRM (facebookresearch/dlrm, kaggle day-based).
KAGGLE_TABLE_ROWS = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593,
    3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105,
    142572)
# Criteo 1TB as used by MLPerf DLRM (ids hashed with max-ind-range 40M).
MLPERF_TABLE_ROWS = (
    39884406, 39043, 17289, 7420, 20263, 3, 7120, 1543, 63, 38532951, 2953546,
    403346, 10, 2208, 11938, 155, 4, 976, 14, 39979771, 25641295, 39664984,
    585935, 12972, 108, 36)
# MLPerf DLRMv2 (DCNv2, multi-hot Criteo 1TB): the reference's --num_embeddings_per_feature.
MLPERF_DCNV2_TABLE_ROWS = (
    40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956,
    405282, 10, 2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000,
    590152, 12973, 108, 36)
# MLPerf DLRMv2's --multi_hot_sizes: ids per example of each feature (C1..C26).
MLPERF_DCNV2_MULTI_HOT = (3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1)
