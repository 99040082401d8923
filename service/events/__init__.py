"""Events: purchases, returns and interactions posted by tills and web shops."""
