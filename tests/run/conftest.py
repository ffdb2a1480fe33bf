"""Fixtures of the run-directory tests: the gs:// emulator (tests/run/gcs_server.py)."""
from tests.run.gcs_server import gcs_bucket, gcs_process, gcs_server  # noqa: F401  (fixtures for this package)
