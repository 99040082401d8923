"""The scopes an API key can hold."""

from typing import Final

EVENTS_WRITE: Final = "events:write"
CUSTOMERS_READ: Final = "customers:read"
AWARDS_REDEEM: Final = "awards:redeem"
RULES_ADMIN: Final = "rules:admin"
REPORTS_READ: Final = "reports:read"
KEYS_ADMIN: Final = "keys:admin"
CUSTOMERS_ERASE: Final = "customers:erase"

ALL: Final = (EVENTS_WRITE, CUSTOMERS_READ, AWARDS_REDEEM, RULES_ADMIN, REPORTS_READ, KEYS_ADMIN, CUSTOMERS_ERASE)
