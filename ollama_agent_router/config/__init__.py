"""Configuration: the schema as frozen dataclasses, YAML 1.2 loading, validation with paths and line numbers."""
