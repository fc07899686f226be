"""Prefect flows over the `pipeline` stage functions (no stage logic lives here)."""
