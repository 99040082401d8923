"""Awards: gifts, points and offers given to customers, with their codes and status."""
