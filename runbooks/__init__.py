"""One markdown runbook per alert, linked from each alert's runbook_url."""
