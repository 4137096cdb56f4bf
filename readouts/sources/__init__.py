"""Warehouse-native readouts: the readout's sums computed where the events already live.

- ``plan``: what one experiment's query needs (its metric definitions, variants, time range);
- ``builder``: the one logical query (sqlglot), rendered per engine — only sums leave the warehouse;
- ``runners``: one small runner per engine (DuckDB, PostgreSQL, Spark Connect), read-only, with a timeout;
- ``refresh``: snapshots (``readouts.ReadoutSnapshot``) and the background refresh task.

The rows produced are exactly ``readouts.queries.SumsRow`` (see its docstring), so statistics, health
checks, the ship guard and the bundle do not know which source produced them.
"""
