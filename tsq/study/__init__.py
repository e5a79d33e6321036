"""Study glue: the search-space schema, storage URLs, and the optimize loop (runner)."""
