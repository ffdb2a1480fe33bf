"""The TPU compile family: the ahead-of-time compile report, its HLO reading, slice topologies, the compilation cache."""
