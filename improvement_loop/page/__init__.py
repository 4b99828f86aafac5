"""The fleet page (`robot-runtime-page`, or started by the daemon): what the fleet runs, how it does, and what
the nightly daemon decided, read from the catalog's SQLite database over read-only connections.

May import `fleet/` (catalog, deployments), `daemon/records` (its readers) and the robot half's episode
viewer; never torch. `status` gathers the data, `svg` draws the plots, `render` writes the HTML, `app` serves.
"""
