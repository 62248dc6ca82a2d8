"""Browser-facing pages and the cookies that tie a browser to its transactions and session."""
