"""Errors a user can fix: the CLI prints them as one line and exits 2."""


class InputError(Exception):
    """Bad input or usage; the message names the file/URL and the problem in one line."""
