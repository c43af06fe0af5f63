"""The checks deploy/check_custom_resources.py runs on one rendered kustomization, one concern per module.

``common`` holds the constants and the helpers that read a render (shared by the others); ``resources``
checks the custom resources (KEDA, Prometheus Operator) and maps each kind to its checker (``CHECKERS``);
``policy`` checks the worker's operational policy on the built-in kinds; ``model_store`` checks the model
store and the worker's model alerts; ``skips`` checks the checkov suppression annotations. Runs in the
deploy tools venv (PyYAML only); imports nothing from the project's packages.
"""
