"""Paying for a hold: providers, checkout, their signed notifications, refunds."""
