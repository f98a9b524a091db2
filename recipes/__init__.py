"""The shipped recipes and evaluation suites, installed as the package ``modbind.shipped_recipes``.

The YAML files beside this one are data: ``modbind recipe list`` shows them and ``--recipe NAME`` /
``--suite NAME`` find them by name (see :func:`modbind.recipes.find_shipped`).
"""
