"""Errors the domain raises for bad requests; every caller turns them into a clear user message."""


class DomainError(Exception):
    """A request the domain refuses; the message is fit to show to the person who asked."""


class NotFound(DomainError):
    pass


class InvalidValue(DomainError):
    pass


class NotAllowed(DomainError):
    pass
