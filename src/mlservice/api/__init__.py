"""The HTTP API: ``create_app`` builds it for one bundle; ``run_server`` serves it."""

from mlservice.api.main import create_app
from mlservice.api.server import run_server
from mlservice.api.settings import ApiSettings, settings_from_env

__all__ = ["ApiSettings", "create_app", "run_server", "settings_from_env"]
