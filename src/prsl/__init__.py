"""prsl: robust fine-tuning and honest adversarial evaluation of vision-language models.

The package is layered, and imports run one way (down):

- ``core``: user errors, the typed-parameter base, shared conventions;
- ``losses``, ``models``, ``data``, ``attacks``, ``metrics``: independent libraries;
- ``config``, ``results``, ``provenance``: what the pipeline stages share;
- ``train``, ``evaluate``, ``report``: the stages, which import no other stage;
- ``sweep``, ``quickstart``, then ``cli``: on top.
"""

__version__ = "0.1.0"
