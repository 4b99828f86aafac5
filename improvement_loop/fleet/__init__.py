"""The workstation's side of the fleet (to come): ingest server, catalog, signing, the nightly daemon.

May import `cycle` and everything below it."""
