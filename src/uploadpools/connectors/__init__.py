"""Platform connectors and generic targets, one sub-package each."""
