"""Side-by-side codec benchmarks, theoretical bounds, reports and plots."""
