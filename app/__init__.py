"""Subscription Engine: subscription billing and payments."""
