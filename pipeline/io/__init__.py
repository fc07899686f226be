"""Where documents and tokens live: sources to read, Parquet shards of documents and tokens, and the executor
that runs per-shard work in this process, a process pool or on Dask. Nothing here judges text."""
