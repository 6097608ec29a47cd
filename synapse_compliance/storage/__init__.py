"""Storage: the only place that writes SQL. One store per capability, one SQL text for both engines."""
