"""The one exception type users see: a one-line message saying what is wrong and what to do."""


class TlsegError(Exception):
    """Bad input or a bad request, explained in one line.

    The CLI prints ``error: <message>`` and exits with code 2; a directory run reports
    the file and goes on with the next one.
    """


def check_positive(name: str, value, unit: str = "pixels") -> None:
    """Raise :class:`TlsegError` unless ``value`` is None or a finite number > 0, before a
    run writes anything (a size of 0, -5 or NaN would otherwise fail every image).

    >>> check_positive("diameter", 30.0)
    >>> check_positive("diameter", -5.0)
    Traceback (most recent call last):
    ...
    tlseg.errors.TlsegError: diameter must be > 0 pixels, got -5.0
    """
    if value is None:
        return
    try:
        ok = float(value) > 0 and float(value) != float("inf")
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TlsegError(f"{name} must be > 0 {unit}, got {value}")
