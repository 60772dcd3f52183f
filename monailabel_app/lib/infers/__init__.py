"""Infer tasks: thin adapters from MONAI Label requests to the ``insight`` library's predictors."""
