"""Exceptions a user can act on. Only the CLIs turn them into exit codes."""


class ConversionError(Exception):
    """Bad input: a missing, corrupt or mismatched source file or variable (CLI exit code 2)."""


class ParityError(Exception):
    """Both graphs ran, but their outputs differ beyond tolerance (CLI exit code 1)."""
