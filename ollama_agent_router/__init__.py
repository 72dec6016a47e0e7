"""ollama-agent-router: one OpenAI-compatible endpoint that routes each request to the best local Ollama model."""

__version__ = "0.2.0"
SERVICE = "ollama-agent-router"
