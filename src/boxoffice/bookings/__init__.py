"""Bookings after the sale: codes, the buyer's booking page, organisers' changes."""
