"""The one trainer of mixer-zoo."""
