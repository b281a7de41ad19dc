"""Payment providers behind one Protocol: Stripe, PayPal and the built-in sandbox."""
