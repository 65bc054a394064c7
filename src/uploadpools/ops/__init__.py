"""Operating the service: health checks, Prometheus metrics, structured logs."""
