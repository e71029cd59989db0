"""The one exception type users see: a one-line message saying what is wrong and what to do."""


class TlsegError(Exception):
    """Bad input or a bad request, explained in one line.

    The CLI prints ``error: <message>`` and exits with code 2; a directory run reports
    the file and goes on with the next one.
    """
