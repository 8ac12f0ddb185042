"""CLI command modules registered by ``mlservice.cli``; each imports heavy libraries lazily."""
