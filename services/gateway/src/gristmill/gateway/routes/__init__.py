"""HTTP route handlers, one module per API area."""
