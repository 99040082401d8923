"""Customers: one profile per customer id, kept up to date from events."""
