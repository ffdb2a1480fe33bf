"""The TPU compile family: the ahead-of-time compile report, its HLO reading, slice topologies,
the peak-memory formula, the compilation cache."""
