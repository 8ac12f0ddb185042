"""Reports of a trained model: evaluation plots and the bundle's model card.

Importing this package imports neither matplotlib nor jinja2 (both from the ``train`` extra);
they are loaded when ``render_plots`` / ``render_model_card`` run.
"""

from mlservice.reports.model_card import render_model_card, write_model_card
from mlservice.reports.plots import render_plots

__all__ = ["render_model_card", "render_plots", "write_model_card"]
