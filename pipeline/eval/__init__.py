"""What the evaluate stage measures: bits per byte on held-out shards, sample metrics, bias probes, the report."""
