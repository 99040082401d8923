"""The audit log: rule activations, key creation and revocation, manual point adjustments."""
