"""boxoffice: a ticket booking service that never sells a seat twice."""

__version__ = "0.1.0"
