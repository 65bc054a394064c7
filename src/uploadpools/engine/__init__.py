"""The engine: ticker (due slots → firings) and dispatcher (deliveries → connectors)."""
