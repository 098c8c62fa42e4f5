"""The worker: claims jobs by tag and runs them in child processes."""
