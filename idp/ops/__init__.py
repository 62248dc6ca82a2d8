"""Running the IdP as a service: health, outages, metrics, logs (PROTOCOL §7.7 in the README)."""
