"""E-mail to buyers, sent from an outbox after the sale committed."""
