"""Reports of a study, in three layers: its data (`data`: the study's and trials' records, read once), the
statistics computed from that data alone (`table`: the Pareto table, p_front, replicates; `importance`;
`recommend`; `effects`), and their rendering (`pareto`, `figures`, `sections`, `advice`, `effects_markdown`).
Which metrics each table shows is their registry entry's (`tsq.method.metrics.Metric.reports`)."""
