"""The dense part of DLRM: shared layers, the interactions, the model, and its counts (parameters, FLOPs)."""
