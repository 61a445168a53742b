"""pailbench: the benchmark harness behind bench/run."""
