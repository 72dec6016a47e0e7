"""The embedded Ollama simulator: Ollama's wire formats and scheduler, with simulated models and a fake GPU."""
