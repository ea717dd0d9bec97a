"""Reading the log: list, fetch, export; who may read which chain; reads recorded as entries."""
