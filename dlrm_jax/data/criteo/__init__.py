"""The Criteo click logs (Kaggle Display Advertising Challenge, Terabyte).

    format    the TSV line format, hashing rules, a vectorised block parser
    io        streaming reads (plain and gzip), line counting, a parallel map
    splits    split conventions (Kaggle day-based, Terabyte days) as SplitPlans
    vocab     per-feature id counting and frequency-thresholded vocabularies
    manifest  the prepared directory's manifest (statistics, checksums)
    prepare   `dlrm-scaling data criteo-prepare`: TSV into resumable npy shards
    source_pass  one pass of the preparation over one source (a worker's job)
    source    CriteoSource: prepared shards as a DataSource for training
    tfds      a tensorflow-datasets ArrayRecord builder (optional extra)
    table_sizes  published rows per feature (Kaggle, MLPerf Terabyte)
"""
