"""User-facing errors: the CLI turns these into one line on stderr and exit code 2."""


class UserError(Exception):
    """Bad input from the user (spec, file, URL, model path). The message names what is wrong."""


class TrialFailed(Exception):
    """A trial cannot produce a meaningful result (NaN loss, empty outputs, no pairs)."""
