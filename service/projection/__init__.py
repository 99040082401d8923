"""The analyst's path: the uplift projection, built from committed events in batches outside the till's transaction.

The event path stores events, exposures and awards and nothing for the
reports; this package reads what committed since it last ran and folds it
into ``customer_timelines`` and ``first_exposures``, which the uplift report
reads. Imports go one way only: this package reads the event path's tables
and is never called by it.
"""
