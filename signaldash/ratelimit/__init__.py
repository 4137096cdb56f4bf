"""Fixed-window rate limits shared by every worker and app server (API keys, readouts, logins)."""
