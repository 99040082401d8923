"""Webhooks: other systems hear about awards through a transactional outbox."""
