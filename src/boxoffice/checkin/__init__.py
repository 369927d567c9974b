"""Check-in at the door: scanners and the one admission per ticket."""
