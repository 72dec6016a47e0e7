"""Access control: planes, API keys, rate limits, the managed access file, the admin plane's gate, audit."""
