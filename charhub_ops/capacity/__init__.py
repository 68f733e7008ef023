"""The capacity pipeline's core (no Prefect): growth and forecasts from data the project already keeps.

* :mod:`.forecast` — pure: least-squares lines, growth per week, days to a threshold, outpacing tables;
* :mod:`.collect` — series: database, backup and table sizes from the manifests; disk samples of the monitor;
* :mod:`.report` — the JSON model (``charhub-ops capacity --json``) and its markdown;
* :mod:`.chart` — the PNG (matplotlib, imported only there);
* :mod:`.run` — inputs → series → report → chart, shared by the CLI and the flow.
"""
