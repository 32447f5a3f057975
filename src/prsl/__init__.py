"""prsl: robust fine-tuning and honest adversarial evaluation of vision-language models.

The package is layered: ``losses``, ``models``, ``data``, ``attacks`` and ``metrics`` are
independent building blocks; ``train``, ``evaluate``, ``report`` and ``cli`` compose them.
"""

__version__ = "0.1.0"
