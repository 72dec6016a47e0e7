"""HTTP/1.1: a sans-IO request parser (``parser``) and the asyncio server built on it (``server``)."""
