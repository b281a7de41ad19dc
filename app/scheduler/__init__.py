"""The scheduler process: claims due work in batches and enqueues it after commit."""
