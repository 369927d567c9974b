"""The waiting list of a sold-out event: returned seats offered in turn (DESIGN.md)."""
