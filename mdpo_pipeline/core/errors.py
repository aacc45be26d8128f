"""Errors shared by every layer."""


class ConfigError(ValueError):
    """A params file or setting that cannot be used, with the file and key named."""
