"""The waiting room: a fair queue in front of an event's on-sale (DESIGN.md, "Selling fairly")."""
