"""The benchmark harness (bench/run.py); not part of the portal."""
