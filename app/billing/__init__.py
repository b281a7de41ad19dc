"""Pure calendar-and-money rules of the billing engine (standard library only)."""
