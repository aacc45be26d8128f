"""Errors shared by every layer."""


class ConfigError(ValueError):
    """A params file or setting that cannot be used, with the file and key named."""


#: How ``mdpo`` prints a ConfigError (one line, then exit 2), so a launcher can relay the message alone.
CLI_ERROR = "mdpo: error: "
